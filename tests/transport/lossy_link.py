"""A bad network on loopback: a UDP relay that loses, delays (and so reorders) datagrams, and can
go silent for a while, between a WebRTC client and the server.

The client is told (in the server's answer) that the server's media port is the relay's, and the
server is told (in the client's offer) of a client port where nothing listens: the only pair of
addresses that connects is through the relay, so every packet both ways crosses it. (The kernel's
netem would do this inside a network namespace; this machine's kernel has no netem.)
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field


@dataclass
class Impairment:
    loss: float = 0.0  # share of datagrams dropped
    jitter_s: float = 0.0  # each datagram delayed by a uniform 0..jitter (reorders them)
    outages: list[tuple[float, float]] = field(default_factory=list)  # (start, end) s after start()


class LossyRelay(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int], impairment: Impairment, seed: int = 0) -> None:
        self.target, self.impairment = target, impairment
        self.random = random.Random(seed)
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.started = 0.0
        self.passed = self.dropped = 0

    @classmethod
    async def start(cls, target: tuple[str, int], impairment: Impairment, seed: int = 0) -> LossyRelay:
        loop = asyncio.get_running_loop()
        relay = cls(target, impairment, seed)
        await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
        relay.started = loop.time()
        return relay

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        if addr != self.target:
            self.client = addr
            to = self.target
        elif self.client is not None:
            to = self.client
        else:
            return
        now = loop.time() - self.started
        silent = any(start <= now < end for start, end in self.impairment.outages)
        if silent or self.random.random() < self.impairment.loss:
            self.dropped += 1
            return
        self.passed += 1
        delay = self.random.uniform(0, self.impairment.jitter_s)
        loop.call_later(delay, self._send, data, to)

    def _send(self, data: bytes, to: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, to)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


CANDIDATE = re.compile(r"^(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 )(\d+)( typ host.*)$", re.MULTILINE)


def media_port(sdp: str) -> int:
    """The loopback host candidate's port in an SDP (the test's peers offer only that one)."""
    match = CANDIDATE.search(sdp)
    assert match is not None, "no loopback host candidate"
    return int(match.group(2))


def with_port(sdp: str, port: int) -> str:
    """The SDP with its loopback host candidates moved to `port` (and no others)."""
    return CANDIDATE.sub(lambda m: f"{m.group(1)}{port}{m.group(3)}", sdp)
