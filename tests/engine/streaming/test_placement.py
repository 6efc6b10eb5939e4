"""A live producer's audio placed by its own clock: stalls move nothing, pauses are silence,
drift is caught."""

from __future__ import annotations

from fractions import Fraction

import pytest

from engine.streaming.placement import WRAP, ProducerClock

RATE = 16_000
PIECE = 320  # 20 ms
RTP_RATE = 48_000
RTP_TIME = Fraction(1, RTP_RATE)
RTP_PIECE = 960
MAX_LAG = 3_200  # 200 ms


def test_a_burst_after_a_stall_keeps_its_place() -> None:
    """The event loop was busy for 600 ms: the microphone's pieces of that time come at once."""
    clock = ProducerClock(RATE, MAX_LAG)
    placed = [clock.place(PIECE, clock_pts=8_000 + i * PIECE) for i in range(50)]  # on time
    stalled_at = 8_000 + 50 * PIECE + 9_600  # 600 ms later than the next piece was due
    placed += [clock.place(PIECE, clock_pts=stalled_at) for _ in range(31)]
    placed += [clock.place(PIECE, clock_pts=stalled_at + (i + 1) * PIECE) for i in range(50)]
    assert placed == [8_000 + i * PIECE for i in range(131)]  # one after another, nothing moved
    assert clock.anchors == 1


def test_a_pause_on_the_producers_clock_is_silence() -> None:
    """A WebRTC sender sends nothing for 5 s of silence (DTX), its RTP time goes on; across the
    32-bit wrap of that time."""
    clock = ProducerClock(RATE, MAX_LAG)
    rtp = WRAP - 10 * RTP_PIECE  # wraps within the first 10 pieces
    placed = []
    for i in range(20):
        placed.append(clock.place(PIECE, 1_000 + i * PIECE, rtp % WRAP, RTP_TIME))
        rtp += RTP_PIECE
    rtp += 5 * RTP_RATE  # 5 s without packets
    resumed = 1_000 + 20 * PIECE + 5 * RATE
    placed.append(clock.place(PIECE, resumed, rtp % WRAP, RTP_TIME))
    assert placed[:20] == [1_000 + i * PIECE for i in range(20)]  # the wrap is no gap
    assert placed[20] == resumed and clock.anchors == 1  # placed by its clock, not re-anchored
    # Three packets lost after it: the next one goes where its time says, 4 pieces on.
    rtp += 4 * RTP_PIECE
    assert clock.place(PIECE, resumed + 4 * PIECE, rtp % WRAP, RTP_TIME) == resumed + 4 * PIECE


def test_a_producer_without_a_clock_that_pauses_starts_again_at_the_clock() -> None:
    clock = ProducerClock(RATE, MAX_LAG)
    for i in range(10):
        clock.place(PIECE, i * PIECE)
    assert clock.place(PIECE, 10 * PIECE + 5 * RATE) == 10 * PIECE + 5 * RATE
    assert clock.anchors == 2


def test_a_producer_whose_clock_runs_slow_is_caught_up() -> None:
    """Its 20-ms pieces come every 20.2 ms of ours (1 %, to see it in seconds): they fall behind
    until even the least late of the window is more than max_lag late, then start at the clock."""
    clock = ProducerClock(RATE, MAX_LAG, window_s=2.0)
    worst = 0
    for i in range(2_000):
        arrival = round(i * PIECE * 1.01)
        pts = clock.place(PIECE, arrival)
        worst = max(worst, arrival - (pts + PIECE))
    assert clock.anchors >= 2  # caught up, more than once over 40 s
    assert worst <= MAX_LAG + 2 * RATE * 0.01 + PIECE  # never more than the window's drift beyond max_lag


def test_a_producer_is_never_placed_ahead_of_the_clock() -> None:
    """A sender's time that jumps an hour ahead, and a clock 1 % fast: placed at the clock."""
    clock = ProducerClock(RATE, MAX_LAG)
    rtp = 0
    for i in range(10):
        clock.place(PIECE, i * PIECE, rtp, RTP_TIME)
        rtp += RTP_PIECE
    assert clock.place(PIECE, 10 * PIECE, rtp + 3600 * RTP_RATE, RTP_TIME) == 10 * PIECE
    assert clock.anchors == 2
    fast = ProducerClock(RATE, MAX_LAG)
    ahead = 0
    for i in range(2_000):
        arrival = round(i * PIECE * 0.99)
        ahead = max(ahead, fast.place(PIECE, arrival) - arrival)
    assert fast.anchors >= 2 and ahead <= MAX_LAG + PIECE


def test_a_stall_longer_than_the_window_keeps_the_live_voice() -> None:
    """3 s held back: the burst starts at the clock and what would run ahead of it goes there too
    (the audio already placed wins, so the stale rest is dropped); live pieces follow on time."""
    clock = ProducerClock(RATE, MAX_LAG, window_s=2.0)
    for i in range(50):
        clock.place(PIECE, i * PIECE)
    now = 50 * PIECE + 3 * RATE
    burst = [clock.place(PIECE, now) for _ in range(150)]
    assert burst[0] == now and max(burst) <= now + MAX_LAG
    live = [clock.place(PIECE, now + (i + 1) * PIECE) for i in range(20)]
    assert all(0 <= p - (now + (i + 1) * PIECE) <= MAX_LAG + PIECE for i, p in enumerate(live))


def test_max_lag_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_lag_samples"):
        ProducerClock(RATE, 0)
