"""The process's C heap: how much of it is in use, how much it holds free, and keeping the free small.

A server that runs for hours allocates frames, packets and tensors from many threads (the event
loop, torch's, the codecs'). glibc's malloc keeps what is freed in its arenas for reuse, and once a
large mapped block has been freed it serves blocks up to that size (up to 32 MB) from the arenas
too: its mmap threshold rises. Tensors and frames of many sizes then fragment the arenas, whose
free space grows for as long as the process runs, and the resident set with it, while the memory
in use stays flat (docs/latency-harness.md, "Where the memory went": 30 minutes, in use flat at
~270 MB, the free held 463 -> 574 MB even with its free pages given back every 30 s). So
`prepare_heap`:

- allows malloc two arenas instead of up to eight per core: what one thread frees, the others reuse, instead
  of each thread's arena keeping its own free space (the free held grew 21 MB per 10 minutes over
  the same 30 minutes instead of 34, the stream kept its speed);
- and gives the arenas' whole free pages back to the kernel (`malloc_trim(0)`) every 30 s, from a
  thread of its own: the resident memory ended that half hour where it began (677 -> 680 MB).

A fixed mmap threshold (128 KiB) held the free space flat too, but mapped and faulted in every
tensor of the model's stages anew: 2-2.5x slower stages (docs/latency-harness.md). Not used.

Only glibc has these calls; elsewhere (musl, macOS) `heap_usage` is None and nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 30.0
ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
            "keepcost",
        )
    ]  # fmt: skip


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2  # glibc >= 2.33; the 32-bit mallinfo wraps at 4 GB
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


@dataclass(frozen=True)
class HeapUsage:
    in_use_bytes: int  # allocated and not freed: the arenas' chunks in use and the mapped blocks
    free_bytes: int  # freed, held by the arenas for reuse (resident until trimmed; counted after too)


def heap_usage() -> HeapUsage | None:
    """The C heap now (None without glibc)."""
    if _LIBC is None:
        return None
    info = _LIBC.mallinfo2()
    return HeapUsage(in_use_bytes=info.uordblks + info.hblkhd, free_bytes=info.fordblks)


def trim_heap() -> bool:
    """Give the heap's whole free pages back to the kernel; True if any were (False without glibc)."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


class HeapTrimmer:
    """Calls `trim` every `interval_s` from a daemon thread of its own until stopped. A thread
    rather than an event-loop task: a trim takes milliseconds (about 10 for 120 MB free, measured
    in its test), and the loop paces the frames."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S, trim: Callable[[], bool] = trim_heap) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s, self._trim = interval_s, trim
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heap-trimmer", daemon=True)

    def start(self) -> HeapTrimmer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            self._trim()
            log.debug("heap trimmed in %.1f ms", (time.perf_counter() - started) * 1e3)


_process_trimmer: list[HeapTrimmer] = []  # at most one
_process_trimmer_lock = threading.Lock()


def prepare_heap() -> HeapTrimmer | None:
    """For a long-running process, called before its threads start allocating (an arena is given
    to a thread at its first allocation): at most ARENAS arenas, and the process's trimmer started,
    both on the first call (None without glibc)."""
    if _LIBC is None:
        return None
    with _process_trimmer_lock:
        if not _process_trimmer:
            if not _LIBC.mallopt(_M_ARENA_MAX, ARENAS):
                log.warning("could not limit the heap's arenas; its free space may grow")
            _process_trimmer.append(HeapTrimmer().start())
        return _process_trimmer[0]
