"""Pacing and the latency policy: the delay D, the due times, and degradation.

This module owns D: `session_delay` decides it once per session (asked for, or
from the measured compute), and the `Timeline` made from it is the only place
due times are computed. Video frame n is due at `t0 + D + n / fps` and audio
sample s at `t0 + D + s / rate`, so the output audio and video share one
schedule (A/V offset 0 by construction) and the delay never grows: the pacer
(output.SessionOutput) replaces a frame that is not ready when due by a
fallback, never waits for it.

D must cover the audio a segment waits for (its frames, the lookahead and the lead),
the compute of both stages one after the other (the pipeline overlaps
segments, not the stages of one segment), and network jitter.

When misses persist the policy degrades in steps — fewer LR flow steps, then
one step, then the refiner skipped (the upsampled LR frames are shown) — and
steps back up after a run of clean segments, waiting longer after each
recovery that failed. Larger segments are
not a step: they would need a larger D, and D is fixed for the session's life.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

from engine.config import Config

log = logging.getLogger(__name__)


def target_delay(config: Config, compute_s: float, jitter_s: float, safety: float) -> float:
    """Seconds of delay that fit one segment's audio wait + `safety` x its compute + jitter."""
    wait_frames = config.segment_video_frames + config.audio_wait_frames
    return wait_frames / config.time.fps + safety * compute_s + jitter_s


def session_delay(
    config: Config, compute_s: float, requested_ms: float | None, jitter_ms: float, safety: float
) -> float:
    """D in seconds: `requested_ms` when given, else the automatic `target_delay` for `compute_s`
    (one segment through both stages, measured by the engine at warm-up)."""
    if requested_ms is not None:
        return requested_ms / 1000
    return target_delay(config, compute_s, jitter_ms / 1000, safety)


@dataclass(frozen=True)
class Timeline:
    """A session's time base, fixed when it starts: its clock origin t0 and its delay D."""

    t0: float
    delay: float
    fps: int
    rate: int  # audio samples per second

    def frame_due(self, pts: int) -> float:
        return self.t0 + self.delay + pts / self.fps

    def sample_due(self, pts: int) -> float:
        return self.t0 + self.delay + pts / self.rate

    def arriving_pts(self, now: float) -> int:
        """The input audio pts arriving at `now`, if audio flows in real time."""
        return max(0, math.floor((now - self.t0) * self.rate))

    def playing_pts(self, now: float) -> int:
        """The audio pts the delayed output plays at `now` (negative before it starts)."""
        return math.floor((now - self.t0 - self.delay) * self.rate)


class MovingAverage:
    """An exponential moving average of measured seconds (stage compute), from a first estimate."""

    def __init__(self, initial: float, weight: float = 0.2) -> None:
        self.value, self.weight = initial, weight

    def add(self, x: float) -> None:
        self.value = (1 - self.weight) * self.value + self.weight * x


@dataclass(frozen=True)
class Quality:
    """What the pipeline runs at one degrade level."""

    level: int
    lr_steps: int
    refine: bool  # False: the refiner is skipped and the upsampled LR frames are the output


def quality_levels(lr_steps: int) -> list[Quality]:
    """Full quality first, then cheaper steps (levels that would repeat the one before are left out)."""
    steps = list(dict.fromkeys([lr_steps, max(1, lr_steps // 2), 1]))
    levels = [Quality(i, s, True) for i, s in enumerate(steps)]
    return [*levels, Quality(len(levels), 1, False)]


class DegradePolicy:
    """Decides the quality level from how many frames missed their due time, segment by segment."""

    def __init__(
        self,
        lr_steps: int,
        *,
        enabled: bool = True,
        window: int = 3,  # segments looked at to degrade
        misses_to_degrade: int = 2,  # of them with a miss
        clean_to_recover: int = 12,  # clean segments in a row before stepping back up
        max_clean_to_recover: int = 96,
    ) -> None:
        self.levels = quality_levels(lr_steps)
        self.enabled = enabled
        self.level = 0
        self.changes = 0
        self._recent: deque[bool] = deque(maxlen=window)
        self._misses_to_degrade = misses_to_degrade
        self._clean_needed = clean_to_recover
        self._max_clean = max_clean_to_recover
        self._clean_run = 0
        self._recovered_recently = False

    @property
    def quality(self) -> Quality:
        return self.levels[self.level]

    def end_of_segment(self, missed: bool) -> Quality | None:
        """Record whether a segment had a miss; returns the new quality when the level changes."""
        if not self.enabled:
            return None
        self._recent.append(missed)
        self._clean_run = 0 if missed else self._clean_run + 1
        if sum(self._recent) >= self._misses_to_degrade and self.level < len(self.levels) - 1:
            if self._recovered_recently:  # the last recovery did not hold: wait longer next time
                self._clean_needed = min(self._max_clean, 2 * self._clean_needed)
            return self._change(self.level + 1, "degrade")
        if self._clean_run >= self._clean_needed and self.level > 0:
            self._recovered_recently = True
            return self._change(self.level - 1, "recover")
        if self._clean_run >= self._clean_needed:
            self._recovered_recently = False
        return None

    def _change(self, level: int, why: str) -> Quality:
        self.level = level
        self.changes += 1
        self._recent.clear()
        self._clean_run = 0
        q = self.quality
        refiner = "on" if q.refine else "off"
        log.info("%s to level %d: %d LR steps, refiner %s", why, level, q.lr_steps, refiner)
        return q
