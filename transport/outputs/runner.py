"""One output's thread: a bounded queue in front of a sink, drops counted, reconnects with backoff.

The session hands every frame and voice piece to `put_video` / `put_audio`, which never block:
when the sink falls behind by more than the queue holds (2 s of video), new items are dropped and
counted instead of the queue growing or the session waiting. A sink that fails to open or whose
receiver goes away is closed and opened again after a backoff (0.5 s doubling to 8 s); items
meanwhile are dropped and counted. A recording (a file) is not retried: a failed file is failed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import av
import numpy as np

from transport.outputs.sink import OutputError, Sink

log = logging.getLogger(__name__)

QUEUE_ITEMS = 100  # 2 s of video and its voice (one audio piece per frame)
BACKOFF_S = (0.5, 8.0)  # first and longest wait before reopening
FAILURES = (OutputError, OSError, av.FFmpegError, ValueError)  # what a sink raises when it cannot go on


@dataclass(frozen=True)
class _Item:
    kind: str  # "video" or "audio"
    data: np.ndarray
    index: int


class OutputRunner:
    def __init__(self, sink: Sink, *, retry: bool = True, queue_items: int = QUEUE_ITEMS) -> None:
        self.sink, self.retry = sink, retry
        self._queue: queue.Queue[_Item | None] = queue.Queue(queue_items)
        self._thread = threading.Thread(target=self._run, name=f"output {sink.url}", daemon=True)
        self._lock = threading.Lock()
        self.state = "connecting"  # connecting, streaming, reconnecting, failed, closed
        self.last_error: str | None = None
        self.sent = {"video": 0, "audio": 0}
        self.dropped = {"video": 0, "audio": 0}
        self.reconnects = 0

    def start(self) -> OutputRunner:
        self._thread.start()
        return self

    def put_video(self, planes: np.ndarray, index: int) -> None:
        self._put(_Item("video", planes, index))

    def put_audio(self, pcm: np.ndarray, index: int) -> None:
        if self.sink.takes_audio:
            self._put(_Item("audio", pcm, index))

    def _put(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drop(item.kind)

    def _drop(self, kind: str) -> None:
        with self._lock:
            self.dropped[kind] += 1

    def _set(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if state != self.state:
                log.info("output %s: %s%s", self.sink.url, state, f" ({error})" if error else "")
            self.state = state
            if error is not None:
                self.last_error = error

    def _run(self) -> None:
        opened, retry_at, backoff = False, 0.0, BACKOFF_S[0]
        while (item := self._queue.get()) is not None:
            if self.state == "failed":
                self._drop(item.kind)
                continue
            if not opened:
                if time.monotonic() < retry_at:
                    self._drop(item.kind)
                    continue
                try:
                    self.sink.open()
                except FAILURES as err:
                    self._failed(err)
                    retry_at, backoff = time.monotonic() + backoff, min(2 * backoff, BACKOFF_S[1])
                    self._drop(item.kind)
                    continue
                opened, backoff = True, BACKOFF_S[0]
                self._set("streaming")
            try:
                if item.kind == "video":
                    self.sink.write_video(item.data, item.index)
                else:
                    self.sink.write_audio(item.data, item.index)
            except FAILURES as err:
                self.sink.close(complete=False)
                opened = False
                with self._lock:
                    self.reconnects += 1
                self._failed(err)
                retry_at = time.monotonic() + backoff
                self._drop(item.kind)
                continue
            with self._lock:
                self.sent[item.kind] += 1
        if opened:
            try:
                self.sink.close(complete=True)
            except FAILURES as err:
                self._set("failed", str(err))
                return
        if self.state != "failed":
            self._set("closed")

    def _failed(self, err: BaseException) -> None:
        self._set("reconnecting" if self.retry else "failed", str(err) or type(err).__name__)

    def stop(self, timeout: float = 5.0) -> bool:
        """Let it write what is queued, close the sink (a file is then complete); False when it
        did not finish within `timeout` (a receiver that blocks)."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "url": self.sink.url,
                "state": self.state,
                "sent": dict(self.sent),
                "dropped": dict(self.dropped),
                "reconnects": self.reconnects,
                "error": self.last_error,
            }
