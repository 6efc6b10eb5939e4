"""A worker thread for blocking model compute, so that it never runs on the event loop.

Each stage of a session owns one worker: calls run one at a time, in order,
and their results come back to the loop with `call_soon_threadsafe`. On CUDA
a worker owns a CUDA stream and runs every call inside it, so two workers are
two streams; work handed from one to the other is ordered by an event
(`Handoff`), not by synchronising the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


def _deliver(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Worker:
    def __init__(self, name: str, device: torch.device | str = "cpu") -> None:
        self.name = name
        device = torch.device(device)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._calls: queue.SimpleQueue[tuple[Any, tuple, asyncio.Future, asyncio.AbstractEventLoop]]
        self._calls = queue.SimpleQueue()
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run fn(*args) on the worker thread; the future resolves on the calling loop."""
        if self._exited.is_set():
            raise RuntimeError(f"worker {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, args, future, loop))
        return future

    def _run(self) -> None:
        closing: tuple[asyncio.Future, asyncio.AbstractEventLoop] | None = None
        try:
            while True:
                call = self._calls.get()
                if call[0] is None:  # close(): (None, (), future, loop)
                    closing = (call[2], call[3])
                    return
                fn, args, future, loop = call
                result, error = None, None
                try:
                    if self.stream is not None:
                        with torch.cuda.stream(self.stream):
                            result = fn(*args)
                    else:
                        result = fn(*args)
                except BaseException as err:  # handed to the awaiting coroutine
                    error = err
                _call_soon(loop, future, result, error)
        finally:
            self._exited.set()
            if closing is not None:
                _call_soon(closing[1], closing[0], None, None)

    async def close(self, timeout: float = 10.0) -> None:
        """Finish the calls already submitted, then end and join the thread."""
        if self._exited.is_set():
            self._thread.join()
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        self._calls.put((None, (), exited, loop))
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            log.error("worker %s did not finish its call within %.0f s; left running", self.name, timeout)
            return
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def _call_soon(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: object, error: object
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_deliver, future, result, error)


@dataclass(frozen=True)
class Handoff:
    """Tensors made on one worker's stream, with the event that marks them ready."""

    value: Any
    event: torch.cuda.Event | None

    @classmethod
    def make(cls, value: Any, device: torch.device) -> Handoff:
        """Called on the producing worker: on CUDA, record an event on its current stream."""
        if device.type != "cuda":
            return cls(value, None)
        event = torch.cuda.Event()
        event.record()
        return cls(value, event)

    def take(self, *tensors: torch.Tensor) -> Any:
        """Called on the consuming worker: order its stream after the producer's event."""
        if self.event is not None:
            stream = torch.cuda.current_stream()
            stream.wait_event(self.event)
            for t in tensors:  # the allocator must not recycle them while this stream reads them
                t.record_stream(stream)
        return self.value
