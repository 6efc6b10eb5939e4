"""What a benchmark report says about where it ran: machine, CPU and GPU model, versions, commit;
the resource use of a process (CPU time, peak memory) and the machine's CPU time, read from /proc."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from engine.benchinfo import environment

REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checkout's commit (with '+dirty' for uncommitted changes), None outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine(device: torch.device | str) -> dict[str, object]:
    info = environment(device)
    info.update(
        cpu=cpu_model(),
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        hostname=platform.node(),
        commit=git_commit(),
    )
    return info


class ProcessUsage:
    """CPU time and peak resident memory of a process (this one by default) since `start()`."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self._cpu0 = self._wall0 = 0.0

    def _cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def start(self) -> None:
        self._cpu0, self._wall0 = self._cpu_seconds(), time.perf_counter()

    def cpu_percent(self) -> float:
        """CPU time over wall time since start(), in % of one core (2 busy cores: 200)."""
        return 100 * (self._cpu_seconds() - self._cpu0) / max(time.perf_counter() - self._wall0, 1e-9)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def age_s(self) -> float:
        """Seconds since the process started."""
        start_ticks = int(Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_ticks() -> dict[str, int] | None:
    """The machine's CPU time since boot by kind, in clock ticks summed over its CPUs (the first
    line of /proc/stat), None where there is no /proc/stat. "steal" is time a virtual machine's
    host gave its CPUs to someone else: work here slows down with nothing here to show for it."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(names, map(int, fields[1 : 1 + len(names)]), strict=False))


def cpu_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Between two machine_cpu_ticks(): the share of the machine's CPU time (%) that was busy
    (anything but idle, waiting for disk and stolen) and that its host stole."""
    spent = {k: after[k] - before.get(k, 0) for k in after}
    total = sum(spent.values())
    if total <= 0:
        return {"busy_pct": 0.0, "steal_pct": 0.0}
    idle = spent.get("idle", 0) + spent.get("iowait", 0) + spent.get("steal", 0)
    return {"busy_pct": 100 * (total - idle) / total, "steal_pct": 100 * spent.get("steal", 0) / total}
