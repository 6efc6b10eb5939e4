"""A session's input audio on its own pts axis: what arrived, when, and silence where nothing did.

Audio is kept from `base` (released as both readers move on: the feature feed
and the delayed audio output) to `end` (one past the last sample received).
Samples never received, or dropped by an interrupt, read as zeros. Arrival
times are kept per pushed piece, for the latency statistics.
"""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from engine.exceptions import EngineError


class AudioInputError(EngineError):
    """Audio pushed into a session that it cannot take."""


class AudioInput:
    def __init__(self, max_ahead_samples: int) -> None:
        self.max_ahead = max_ahead_samples  # how far past the clock a producer may push (TTS bursts)
        self.base = 0  # pts of buffer[0]
        self.buffer = np.zeros(0, np.float32)
        self._arrivals: deque[tuple[int, float]] = deque()  # (end pts of a pushed piece, its arrival)

    @property
    def end(self) -> int:
        """One past the last sample received (everything before it is known: audio or silence)."""
        return self.base + len(self.buffer)

    def push(self, samples: np.ndarray, pts: int, now: float, clock_pts: int) -> int:
        """Store samples at pts; returns how many were kept. A gap before pts is silence; samples
        before `end` (already known) are ignored, so a resent or late piece changes nothing."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if pts < 0:
            raise AudioInputError(f"audio pts must be >= 0, got {pts}")
        if pts + len(samples) > clock_pts + self.max_ahead:
            raise AudioInputError(
                f"audio up to pts {pts + len(samples)} is more than {self.max_ahead} samples ahead of the "
                f"session clock ({clock_pts}); push it closer to when it is due"
            )
        skip = max(0, self.end - pts)
        if skip >= len(samples):
            return 0
        gap = max(0, pts - self.end)
        self.buffer = np.concatenate([self.buffer, np.zeros(gap, np.float32), samples[skip:]])
        self._arrivals.append((self.end, now))
        return len(samples) - skip

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop): zeros outside what was received (or before base)."""
        out = np.zeros(max(0, stop - start), np.float32)
        lo, hi = max(start, self.base), min(stop, self.end)
        if hi > lo:
            out[lo - start : hi - start] = self.buffer[lo - self.base : hi - self.base]
        return out

    def arrival(self, pts: int) -> float | None:
        """When the sample at pts arrived (None if it has not, or was released)."""
        if pts >= self.end or not self._arrivals:
            return None
        i = bisect.bisect_right([end for end, _ in self._arrivals], pts)
        return self._arrivals[i][1] if i < len(self._arrivals) else None

    def silence_from(self, pts: int, until: int) -> None:
        """Interrupt: drop everything from pts on; [pts, until) becomes silence; new audio starts at until."""
        keep = max(0, pts - self.base)
        silence = np.zeros(max(0, until - max(pts, self.base)), np.float32)
        self.buffer = np.concatenate([self.buffer[:keep], silence])
        while self._arrivals and self._arrivals[-1][0] > pts:
            self._arrivals.pop()

    def release(self, before: int) -> None:
        """Forget samples before pts `before`."""
        drop = min(max(0, before - self.base), len(self.buffer))
        if drop:
            self.buffer = self.buffer[drop:]
            self.base += drop
        while len(self._arrivals) > 1 and self._arrivals[0][0] <= self.base:
            self._arrivals.popleft()
