"""A live producer's audio placed on the session's pts axis by the producer's own clock.

A microphone or a WebRTC track delivers its pieces in a burst when the event loop was busy, and
stops delivering when it pauses (a muted tab, a sender that sends nothing in silence). Placed by
when they arrive, the first piece of a burst after a stall looks like speech after a pause: it
would be moved to the clock, every later piece would follow it, and the voice's delay would grow
by the stall for good. Placed here by the producer's clock (a WebRTC frame's RTP time; for a
microphone, which delivers every sample, simply one piece after another):

- a piece that follows the last one on the producer's clock goes right after it, however late it
  comes (a burst after a stall keeps its place; nothing shifts);
- after a jump of the producer's clock (a pause, lost packets), it goes that much later;
- the two clocks drift apart (tens of ppm), and a producer without a clock may pause: when even
  the least late piece of the last `window_s` is more than `max_lag` behind the clock, the piece
  is placed at the clock. A burst after a stall ends with a piece on time, so a stall shorter than
  the window never moves anything;
- a live producer cannot be ahead of the clock: a piece that would start more than `max_lag`
  after it (a clock that runs fast, a jump of the sender's time, the rest of a burst after a stall
  longer than the window) is placed at the clock, where the audio already there wins (stale audio
  is dropped, the live voice kept).
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction

WRAP = 1 << 32  # RTP timestamps are 32-bit
MIN_GAP_S = 0.005  # a jump of the producer's clock shorter than this is rounding, not a pause


class ProducerClock:
    def __init__(self, rate: int, max_lag_samples: int, window_s: float = 2.0) -> None:
        """rate: the session's sample rate; the pts axis is counted in it."""
        if max_lag_samples <= 0:
            raise ValueError(f"max_lag_samples must be > 0, got {max_lag_samples}")
        self.rate, self.max_lag = rate, max_lag_samples
        self.window = round(window_s * rate)
        self.next: int | None = None  # where the next piece goes if it follows the last one
        self._media_end: Fraction | None = None  # seconds on the producer's clock where the last piece ended
        self._raw: int | None = None  # the last raw media timestamp (to unwrap 32-bit RTP time)
        self._unwrapped = 0
        self._lags: deque[tuple[int, int]] = deque()  # (clock pts at arrival, how late its start was)
        self.anchors = 0  # how often a piece was placed at the clock (the first one included)

    def place(
        self,
        samples: int,
        clock_pts: int,
        media_start: int | None = None,
        media_time_base: Fraction | None = None,
    ) -> int:
        """The pts of a piece of `samples` (at the session's rate) arriving at `clock_pts` (the
        session's arriving pts now); media_start: its first sample on the producer's clock, in
        units of media_time_base seconds (a 32-bit RTP timestamp may wrap), None when the producer
        has no clock."""
        if self.next is None:
            return self._anchor(samples, clock_pts, media_start, media_time_base)
        pts = self.next
        if media_start is not None and media_time_base is not None and self._media_end is not None:
            start = self._unwrap(media_start) * media_time_base
            gap = round((start - self._media_end) * self.rate)
            # The producer paused or packets were lost: that much silence. (Less is a resampler's
            # rounding, not a gap: a few samples of silence would click.)
            if gap > self.rate * MIN_GAP_S:
                pts += gap
            self._media_end = start + Fraction(samples, self.rate)
        if pts > clock_pts + self.max_lag:
            return self._anchor(samples, clock_pts, media_start, media_time_base)
        self._lags.append((clock_pts, clock_pts - pts))
        while self._lags[0][0] < clock_pts - self.window:
            self._lags.popleft()
        if min(lag for _, lag in self._lags) > self.max_lag:
            return self._anchor(samples, clock_pts, media_start, media_time_base)
        self.next = pts + samples
        return pts

    def _anchor(
        self, samples: int, clock_pts: int, media_start: int | None, media_time_base: Fraction | None
    ) -> int:
        self.anchors += 1
        self._lags.clear()
        self._lags.append((clock_pts, 0))  # on time: a burst right after it keeps its place
        if media_start is not None and media_time_base is not None:
            self._raw, self._unwrapped = media_start, media_start
            self._media_end = media_start * media_time_base + Fraction(samples, self.rate)
        else:
            self._raw, self._media_end = None, None
        self.next = clock_pts + samples
        return clock_pts

    def _unwrap(self, raw: int) -> int:
        assert self._raw is not None
        step = (raw - self._raw) % WRAP
        if step >= WRAP // 2:  # reordered, a little before the last one
            step -= WRAP
        self._raw, self._unwrapped = raw, self._unwrapped + step
        return self._unwrapped
