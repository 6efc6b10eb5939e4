"""The virtual clock: sessions run hours of stream in seconds with exact stage times."""

from __future__ import annotations

import asyncio

from engine.streaming.clock import VirtualClock
from engine.streaming.worker import Worker


def test_virtual_clock_jumps_to_the_next_wake_up_and_charges_stage_costs() -> None:
    async def main() -> None:
        clock = VirtualClock(start=10.0, costs=lambda stage: {"slow": 2.5}.get(stage, 0.0))
        worker = Worker("clock-test")
        order = []

        async def sleeper(when: float) -> None:
            await clock.sleep_until(when)
            order.append((when, clock.now()))

        await asyncio.gather(sleeper(13.0), sleeper(11.0), sleeper(12.0))
        assert order == [(11.0, 11.0), (12.0, 12.0), (13.0, 13.0)]
        result = await clock.compute(worker, "slow", sum, [1, 2, 3])
        assert result == 6 and clock.now() == 15.5
        await worker.close()
        await clock.aclose()

    asyncio.run(main())
