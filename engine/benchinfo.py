"""What every benchmark JSON carries: the machine, the versions, the time, and p50/p90/p99."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def percentiles(values: Sequence[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def environment(device: torch.device | str = "cpu") -> dict[str, object]:
    device = torch.device(device)
    info: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for package in ("av", "triton"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    return info


def write_report(report: dict, out: Path | None) -> str:
    """The report as JSON text, also written to `out` when given."""
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text


def rss_mb() -> float:
    """Current resident memory of this process (Linux), or the peak where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
