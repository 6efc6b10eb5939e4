"""The types that cross stage boundaries of a live session; every one carries pts.

Clocks: video pts count frames at 25 fps from the session's start; audio pts
count samples at 16 kHz from the same instant, so video frame n shows the
audio samples [n * 640, (n + 1) * 640). Wall-clock stamps are seconds on the
session's clock (`engine.streaming.clock`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class FrameSource(enum.Enum):
    """What a delivered frame is."""

    REFINED = "refined"  # the full pipeline's output
    LOW_RES = "low_res"  # the upsampled LR frame: the refiner was late or is skipped (degraded)
    REPEAT = "repeat"  # the previous frame again: nothing for this pts was ready in time
    REFERENCE = "reference"  # the reference picture, before the first segment is ready


@dataclass(frozen=True)
class StageTimes:
    """When a frame's segment went through each stage (session clock, seconds; None = not run)."""

    audio_ready: float  # the segment's audio window was complete (or its deadline passed)
    low_res_start: float | None = None
    low_res_end: float | None = None  # LR-A2V + LR decode + pose head done (LR frames published)
    refine_start: float | None = None  # the refine worker took the segment
    refine_end: float | None = None  # PG-Refiner + HR decode done
    emitted: float | None = None  # handed to the consumer


@dataclass(frozen=True)
class VideoFrame:
    pts: int  # video frame index at 25 fps
    image: np.ndarray  # uint8 [H, W, 3] RGB at the preset's HR size
    source: FrameSource
    audio_start: int  # the audio pts range the frame depends on: its segment's audio window
    audio_stop: int
    # One past the last input sample the picture was made from: audio_stop, or less when the segment
    # ran at its deadline before the rest came; a repeated frame's is its picture's; 0: the reference.
    audio_heard: int
    generation: int  # increments with every interrupt(); frames of older generations are pre-interrupt
    times: StageTimes
    due: float  # when it was due on the session clock


@dataclass(frozen=True)
class AudioChunk:
    """A piece of the session's output audio: the input delayed to match the frames."""

    pts: int  # first sample, 16 kHz
    samples: np.ndarray  # float32 mono
    due: float  # session-clock time of its first sample (same delay as the frames)
