"""The C heap's numbers and its trimming (glibc, as on every machine this runs on)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from transport import heap

# A fresh interpreter, so that nothing else of the test process moves its heap: blocks under the
# mmap threshold (the arenas'), every second freed and most of the rest, the last kept so the free
# space lies inside the heap (not at its top, which glibc gives back by itself).
FRAGMENTED_HEAP = """
import json
from transport.heap import heap_usage, trim_heap

def resident_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

blocks = [bytes(64 * 1024) for _ in range(2000)]
kept = blocks[1::16]
del blocks
before, resident = heap_usage(), resident_mb()
trimmed = trim_heap()
print(json.dumps({"free_mb": before.free_bytes / 2**20, "in_use_mb": before.in_use_bytes / 2**20,
                  "resident_mb": resident, "after_mb": resident_mb(), "trimmed": trimmed, "kept": len(kept)}))
"""


def test_freed_memory_held_by_the_heap_is_given_back() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True, timeout=60
    )
    numbers = json.loads(result.stdout)
    assert numbers["free_mb"] > 100  # ~117 MB of 125 freed, held by the heap
    assert numbers["in_use_mb"] < 40  # the kept eighth, and the interpreter
    assert numbers["trimmed"]
    assert numbers["resident_mb"] - numbers["after_mb"] > 80  # returned to the kernel


def test_the_heap_usage_counts_what_is_allocated() -> None:
    before = heap.heap_usage()
    assert before is not None
    block = bytearray(8 * 2**20)  # held until the second look
    after = heap.heap_usage()
    assert after is not None and after.in_use_bytes - before.in_use_bytes >= len(block)


def test_the_trimmer_keeps_trimming_until_stopped() -> None:
    trims = threading.Semaphore(0)
    trimmer = heap.HeapTrimmer(interval_s=0.01, trim=lambda: trims.release() or True).start()
    assert trimmer.thread.daemon  # never what keeps a process from exiting
    for _ in range(3):
        assert trims.acquire(timeout=5)
    trimmer.stop()
    assert not trimmer.thread.is_alive()
    with pytest.raises(ValueError, match="interval_s"):
        heap.HeapTrimmer(interval_s=0)


# Eight threads allocate at once; then the arenas malloc made are counted (malloc_info's heaps).
THREADS_ALLOCATING = """
import ctypes, json, os, sys, tempfile, threading
from transport.heap import prepare_heap

trimmer = prepare_heap() if sys.argv[1] == "prepared" else None
start = threading.Barrier(8)
def allocate():
    start.wait()
    blocks = [bytearray(4096) for _ in range(256)]
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
handle, path = tempfile.mkstemp()
os.close(handle)
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
arenas = open(path).read().count("<heap nr=")
os.unlink(path)
print(json.dumps({"arenas": arenas, "once": prepare_heap() is trimmer,
                  "trimming": trimmer is not None and trimmer.thread.is_alive()}))
"""


@pytest.mark.parametrize("prepared", [False, True])
def test_a_prepared_heap_has_two_arenas_however_many_threads_allocate(prepared: bool) -> None:
    mode = "prepared" if prepared else "default"
    run = subprocess.run(
        [sys.executable, "-c", THREADS_ALLOCATING, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    numbers = json.loads(run.stdout)
    if prepared:  # the threads share two arenas; one trimmer per process
        assert numbers["arenas"] == 2 and numbers["once"] and numbers["trimming"]
    else:  # glibc's own behaviour, what the limit is for: an arena per thread (up to 8 per core)
        assert numbers["arenas"] > 2
