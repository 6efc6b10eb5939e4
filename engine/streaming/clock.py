"""The session clock: real (monotonic seconds) or virtual (tests: hours of stream in seconds).

A clock tells the time, sleeps until a time, and runs a stage's compute on a
worker while charging it to the clock. The real clock simply measures. The
virtual clock advances only when nothing else can run: every coroutine is
waiting for a time and no worker is computing; then it jumps to the earliest
wake-up. A stage's compute really runs (on its worker), and takes the virtual
time the clock's cost function gives for that stage, so a test can make a
stage slow, or fast, exactly.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from engine.streaming.worker import Worker

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return at `when` (at once if it has passed)."""
        ...

    async def compute(self, worker: Worker, stage: str, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the worker, off the event loop; `stage` names it for the clock's accounting."""
        ...


class RealClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        # Sleeping to an absolute time (not by a duration) keeps pacing free of accumulated drift.
        await asyncio.sleep(max(0.0, when - self.now()))

    async def compute(self, worker: Worker, stage: str, fn: Callable[..., T], *args: Any) -> T:
        return await worker.submit(fn, *args)


class VirtualClock:
    """Deterministic time for tests; `costs(stage)` gives the virtual seconds a compute takes."""

    SETTLE_ROUNDS = 50  # loop iterations with nothing new before time may jump

    def __init__(self, start: float = 0.0, costs: Callable[[str], float] | None = None) -> None:
        self._now = start
        self.costs = costs or (lambda stage: 0.0)
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._busy = 0
        self._changed: asyncio.Event | None = None
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    def _poke(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.set()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="virtual-clock")

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (when, next(self._order), future))
        self._poke()
        await future

    async def compute(self, worker: Worker, stage: str, fn: Callable[..., T], *args: Any) -> T:
        start = self._now
        self._busy += 1
        self._poke()
        try:
            result = await worker.submit(fn, *args)
        finally:
            self._busy -= 1
            self._poke()
        await self.sleep_until(start + self.costs(stage))
        return result

    async def _settle(self) -> None:
        """Return once no worker computes and no callback is ready to run on the loop."""
        assert self._changed is not None
        loop = asyncio.get_running_loop()
        # asyncio's default loop exposes its ready queue: wait until it is empty (exact). Other
        # loops get a fixed number of rounds with nothing new.
        ready = getattr(loop, "_ready", None)
        quiet = 0
        while True:
            if self._busy:
                self._changed.clear()
                await self._changed.wait()
                quiet = 0
                continue
            if ready is not None and not ready:
                return
            if ready is None and quiet >= self.SETTLE_ROUNDS:
                return
            self._changed.clear()
            await asyncio.sleep(0)
            quiet = 0 if self._changed.is_set() else quiet + 1

    async def _drive(self) -> None:
        assert self._changed is not None
        while True:
            await self._settle()
            while self._timers and self._timers[0][2].done():  # cancelled sleepers
                heapq.heappop(self._timers)
            if not self._timers:
                self._changed.clear()
                await self._changed.wait()
                continue
            when = self._timers[0][0]
            self._now = max(self._now, when)
            while self._timers and self._timers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._timers)
                if not future.done():
                    future.set_result(None)

    async def aclose(self) -> None:
        """Stop the driver task (tests call it when done with the clock)."""
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
            self._driver = None
