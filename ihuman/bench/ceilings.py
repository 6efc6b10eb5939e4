"""The machine's own ceilings, to put a model's speed beside: `python -m ihuman.bench.ceilings`.

A bf16 matrix product (n x n x n) and a device-to-device copy, each timed with CUDA events after
warm-up (the median of `runs`). A stage's TFLOP/s divided by the product's rate is its efficiency;
datasheet peaks are not what a given card, driver and clock deliver. On a CPU (`--size 512`) it
only checks the script.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.benchinfo import environment, write_report


def median_ms(fn: Callable[[], object], device: torch.device, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(device: torch.device, size: int, copy_mib: int, runs: int) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    matmul_ms = median_ms(lambda: a @ b, device, runs)
    source = torch.empty(copy_mib * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_ms = median_ms(lambda: target.copy_(source), device, runs)
    return {
        "matmul": {"n": size, "dtype": str(dtype).removeprefix("torch."), "ms": matmul_ms,
                   "tflops": 2 * size**3 / (matmul_ms * 1e-3) / 1e12},
        # bytes read and written, as datasheets count bandwidth
        "copy": {"mib": copy_mib, "ms": copy_ms, "gb_per_s": 2 * source.numel() / (copy_ms * 1e-3) / 1e9},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8192, help="n of the n x n x n product")
    parser.add_argument("--copy-mib", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {
        "bench": "machine ceilings",
        **environment(device),
        **measure(device, args.size, args.copy_mib, args.runs),
    }
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
