"""One destination of a live session's picture and voice, and what every destination shares.

A sink is blocking and single-threaded: its `OutputRunner` (runner.py) calls it from a thread of
its own, so a slow or stalled receiver never slows the session. Video arrives as 1280x720 (or the
chosen size) yuv420p frames with their frame index, audio as 16-bit mono pieces with their sample
index, both on the session's timeline (frame k is shown with sample k x samples-per-frame): a sink
that stamps them as they come keeps picture and voice in sync by construction.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import av
import numpy as np


class OutputError(Exception):
    """A destination that cannot be used as asked (bad URL, missing package or device)."""


@dataclass(frozen=True)
class StreamFormat:
    """What every sink of a session receives."""

    width: int = 1280
    height: int = 720
    fps: int = 25
    sample_rate: int = 16_000  # the session's audio (mono)

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps


class Sink(abc.ABC):
    """A destination. `open` may fail (the runner retries with backoff); `write_*` raise when the
    receiver went away (the runner closes, reopens later and counts the reconnect)."""

    def __init__(self, url: str, fmt: StreamFormat) -> None:
        self.url, self.fmt = url, fmt

    @abc.abstractmethod
    def open(self) -> None:
        """Connect (or create the file); raise OutputError or OSError when it cannot."""

    @abc.abstractmethod
    def write_video(self, planes: np.ndarray, index: int) -> None:
        """One frame: yuv420p planes as av.VideoFrame.to_ndarray gives them ([H * 3 / 2, W] uint8)."""

    @abc.abstractmethod
    def write_audio(self, pcm: np.ndarray, index: int) -> None:
        """Mono int16 samples starting at sample `index` of the session."""

    @abc.abstractmethod
    def close(self, complete: bool = True) -> None:
        """Flush and release; complete=False after a failure (nothing more to flush)."""

    @property
    def takes_audio(self) -> bool:
        """Whether it carries the voice (a virtual camera does not)."""
        return True


def planes_from_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> yuv420p planes [height * 3 / 2, width], scaled (bilinear)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR").to_ndarray()


def pcm16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16 (clipped)."""
    return (np.clip(samples, -1, 1) * 32767).round().astype(np.int16)
