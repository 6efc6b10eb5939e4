"""A stage's worker: calls run in order on its own thread, and it joins."""

from __future__ import annotations

import asyncio
import threading

import pytest

from engine.streaming.worker import Worker


def test_worker_runs_calls_in_order_off_the_loop_and_joins() -> None:
    async def main() -> None:
        worker = Worker("test-worker")
        loop_thread = threading.get_ident()
        results = await asyncio.gather(
            *(worker.submit(lambda i=i: (i, threading.get_ident())) for i in range(5))
        )
        assert [i for i, _ in results] == list(range(5))
        assert all(thread != loop_thread for _, thread in results)
        with pytest.raises(ZeroDivisionError):
            await worker.submit(lambda: 1 / 0)
        await worker.close()
        assert not worker.alive
        with pytest.raises(RuntimeError, match="closed"):
            worker.submit(lambda: None)

    asyncio.run(main())
