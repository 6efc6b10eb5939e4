"""Rates a client may not exceed: offers and uploads per address, messages per peer.

A token bucket: `burst` requests at once, then `rate` per second. Buckets of addresses not seen for
a while are forgotten, so a flood from many addresses cannot grow the table without bound either
(at most `max_clients` buckets; the stalest is dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    def __init__(
        self, rate: float, burst: int, *, max_clients: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    def allow(self, client: str) -> bool:
        """Take one token of `client`'s bucket; False (and counted) when it is empty."""
        now = self.clock()
        bucket = self._buckets.pop(client, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        self._buckets[client] = bucket  # most recent last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            self.refused += 1
            return False
        bucket.tokens -= 1
        return True

    def retry_after(self) -> int:
        """Seconds until one token is back (for Retry-After)."""
        return max(1, round(1 / self.rate))
