"""Live statistics of a session: counters and windowed histograms, read as a snapshot.

Windows are bounded (the last WINDOW frames or segments), so hours of stream
cost the same memory as a minute.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from engine.frames import FrameSource

WINDOW = 750  # frames (30 s at 25 fps) or segments kept for percentiles


def _percentiles_ms(values: deque[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90, p99 = np.percentile(np.fromiter(values, float), [50, 90, 99]) * 1000
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


@dataclass(frozen=True)
class SessionStats:
    frames_out: int  # frames handed to the consumer
    fps_out: float  # over the last second of emitted frames
    target_delay_ms: float  # D: audio in -> matching audio and video out
    added_latency_ms: dict[str, float] | None  # arrival of the last audio sample a frame needs -> emitted
    fallbacks: dict[str, int]  # frames that were not the pipeline's full output, by kind
    late_frames: int  # frames that were ready only after their due time (dropped)
    skipped_segments: int  # segments not run because they could no longer be on time
    refine_dropped: int  # segments shown at LR because the refiner was still busy with older ones
    consumer_skipped: int  # frames the consumer was too slow to take
    audio_skipped: int  # 20-ms audio pieces skipped: the consumer fell more than AUDIO_CATCH_UP_S behind
    degrade_level: int
    degrade_changes: int
    lr_steps: int
    refiner: bool
    av_offset_ms: float | None  # measured at the output: (audio time - pts) - (video time - pts)
    stage_ms: dict[str, dict[str, float] | None]  # per stage, per segment
    speech: bool  # the VAD hears speech now
    generation: int  # interrupts so far
    audio_pushed_s: float


@dataclass
class StatsCollector:
    frames_out: int = 0
    late_frames: int = 0
    skipped_segments: int = 0
    refine_dropped: int = 0
    consumer_skipped: int = 0
    audio_skipped: int = 0
    audio_pushed: int = 0
    fallbacks: Counter = field(default_factory=Counter)
    emitted_at: deque = field(default_factory=lambda: deque(maxlen=26))
    latency: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    stages: dict[str, deque] = field(default_factory=dict)
    video_clock_offset: float | None = None  # last frame: emitted - pts / fps
    audio_clock_offset: float | None = None  # last audio chunk: emitted - pts / rate

    def frame(
        self, source: FrameSource, emitted: float, latency: float | None, expected: FrameSource
    ) -> None:
        self.frames_out += 1
        self.emitted_at.append(emitted)
        if source is not expected:
            self.fallbacks[source.value] += 1
        if latency is not None:
            self.latency.append(latency)

    def stage(self, name: str, seconds: float) -> None:
        self.stages.setdefault(name, deque(maxlen=WINDOW)).append(seconds)

    def fps(self) -> float:
        if len(self.emitted_at) < 2:
            return 0.0
        span = self.emitted_at[-1] - self.emitted_at[0]
        return (len(self.emitted_at) - 1) / span if span > 0 else 0.0

    def av_offset_ms(self) -> float | None:
        if self.video_clock_offset is None or self.audio_clock_offset is None:
            return None
        return (self.audio_clock_offset - self.video_clock_offset) * 1000

    def stage_ms(self) -> dict[str, dict[str, float] | None]:
        return {name: _percentiles_ms(values) for name, values in self.stages.items()}

    def latency_ms(self) -> dict[str, float] | None:
        return _percentiles_ms(self.latency)
