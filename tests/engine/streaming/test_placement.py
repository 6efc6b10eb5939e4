"""A live producer's audio placed by its own clock: stalls move nothing, pauses are silence,
drift is caught."""

from __future__ import annotations

from engine.streaming.placement import WRAP, ProducerClock

RATE = 16_000
PIECE = 320  # 20 ms
RTP_RATE = 48_000
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
        placed.append(clock.place(PIECE, 1_000 + i * PIECE, rtp % WRAP, RTP_RATE))
        rtp += RTP_PIECE
    rtp += 5 * RTP_RATE  # 5 s without packets
    resumed = 1_000 + 20 * PIECE + 5 * RATE
    placed.append(clock.place(PIECE, resumed, rtp % WRAP, RTP_RATE))
    assert placed[:20] == [1_000 + i * PIECE for i in range(20)]  # the wrap is no gap
    assert placed[20] == resumed and clock.anchors == 1  # placed by its clock, not re-anchored
    # Three packets lost after it: the next one goes where its time says, 4 pieces on.
    rtp += 4 * RTP_PIECE
    assert clock.place(PIECE, resumed + 4 * PIECE, rtp % WRAP, RTP_RATE) == resumed + 4 * PIECE


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
