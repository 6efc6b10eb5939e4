"""aiortc's receiver after transport.retransmission.install(): late copies of retransmitted
packets are dropped, not taken for a restarted sender (which stalled video for 5 s)."""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from transport import retransmission


def packet(sequence_number: int) -> RtpPacket:
    """One packet per frame: each frame leaves the buffer when the next one's packet comes."""
    p = RtpPacket(payload_type=97, sequence_number=sequence_number % 65536, timestamp=3600 * sequence_number)
    p._data = bytes([sequence_number % 256])  # type: ignore[attr-defined]  # the depayloaded data
    return p


def received(buffer: JitterBuffer, numbers: range | list[int]) -> list[tuple[bool, bytes | None]]:
    out = []
    for n in numbers:
        pli, frame = buffer.add(packet(n))
        out.append((pli, None if frame is None else frame.data))
    return out


def test_a_late_copy_from_far_behind_is_dropped_and_video_goes_on() -> None:
    retransmission.install()
    buffer = JitterBuffer(capacity=512, is_video=True)
    received(buffer, range(60_000, 60_300))  # the numbering wraps at 65536 on the way
    late = received(buffer, [60_050])  # a second copy of a packet 250 behind the buffer's start
    assert late == [(False, None)]  # no key frame asked for, nothing handed on
    after = received(buffer, range(60_300, 60_303))
    assert [frame for _, frame in after] == [bytes([n % 256]) for n in range(60_299, 60_302)]
    assert not any(pli for pli, _ in after)


def test_a_jump_back_beyond_the_retransmission_window_restarts_the_buffer() -> None:
    retransmission.install()
    buffer = JitterBuffer(capacity=512, is_video=True)
    received(buffer, range(5_000, 5_100))
    restarted = 5_100 - retransmission.HISTORY_PACKETS - 10  # a sender that numbered anew
    pli, frame = buffer.add(packet(restarted))
    assert pli and frame is None  # a key frame is asked for
    after = received(buffer, range(restarted + 1, restarted + 3))
    assert [frame for _, frame in after] == [bytes([n % 256]) for n in range(restarted, restarted + 2)]
