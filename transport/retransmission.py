"""How much lost video aiortc can bring back by retransmission: 1024 packets instead of 128, and
late copies of them that no longer reset the receiver.

aiortc keeps its last 128 sent RTP packets to resend, and its receiver asks again (NACK) only for
the last 128 it missed. A sharp 1280x720 stream at aiortc's 1 Mbps is about 100 packets a second,
so an outage of more than about 1.3 s leaves packets that no NACK can bring back; aiortc's receiver
then holds every later frame behind the hole until 512 packets have piled up (about 5 s) and only
then asks for a key frame. Measured on loopback with 5 % loss, 50 ms of jitter and a 2-s outage
(tests/transport/test_faults.py's link, two relay seeds): video back 4.0 and 5.1 s after the
outage with 128; 0.08 and 0.11 s with 1024 on both sides (with 1024 on the sender only: 3.96 and
0.19 s). The cost: about 1.2 MB of sent packets kept per video sender.

The receiver asks for the whole hole again with every new gap it sees, so after an outage most
missing packets come twice. Once the first copies fill the hole, its frames leave the jitter
buffer at once and the buffer's start moves on by the hole's length; aiortc takes a packet that
arrives more than 100 behind that start for a sender that restarted its numbering, empties the
buffer and starts again from that old packet, so the same 5-s stall followed (1 run in 7 on that
link). A packet up to the retransmission window behind is a late copy: it is dropped, and only a
jump further back restarts the buffer.
"""

from __future__ import annotations

import aiortc.jitterbuffer
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender

HISTORY_PACKETS = 1024  # divides 65536, so sequence numbers wrap onto the same slots


def install() -> None:
    """For every aiortc sender and receiver of this process (idempotent)."""
    aiortc.rtcrtpsender.RTP_HISTORY_SIZE = HISTORY_PACKETS  # the sent packets kept to resend
    aiortc.rtcrtpreceiver.RTP_HISTORY_SIZE = HISTORY_PACKETS  # the missed packets asked for again
    aiortc.jitterbuffer.MAX_MISORDER = HISTORY_PACKETS  # older than this: a restarted sender
