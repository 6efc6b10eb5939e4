"""`ihuman bench compare`: latency reports side by side, with the noise their repeats show.

Reports with the same settings are repeats of one configuration: their spread (standard
deviation) is the noise of each number. A difference from the baseline (the first
configuration) is marked as within noise when it is under twice the larger noise of the two.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

METRICS: dict[str, Callable[[dict], float | None]] = {
    "latency p50 (ms)": lambda m: (m.get("added_latency_ms") or {}).get("p50"),
    "latency p99 (ms)": lambda m: (m.get("added_latency_ms") or {}).get("p99"),
    "fps sustained": lambda m: (m.get("frame_rate") or {}).get("sustained_fps"),
    "fps worst 1 s": lambda m: (m.get("frame_rate") or {}).get("worst_window_fps"),
    "jitter (ms)": lambda m: (m.get("frame_rate") or {}).get("jitter_ms"),
    "first frame warm (ms)": lambda m: (m.get("first_frame_ms") or {}).get("warm"),
    "fallback rate": lambda m: m.get("fallback_rate"),
    "A/V offset (ms)": lambda m: (m.get("av_sync") or {}).get("mean_ms"),
    "CPU (%)": lambda m: m.get("cpu_percent"),
    "peak memory (MB)": lambda m: m.get("peak_rss_mb"),
}
# Settings that do not make two runs different configurations.
IGNORED = {"seconds"}


def _key(report: dict, varying: set[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in report["settings"].items() if k in varying) or "as given"


def group(reports: Sequence[dict]) -> dict[str, list[dict]]:
    """Reports by configuration, named by the settings that differ between the reports."""
    keys = {k for r in reports for k in r["settings"] if k not in IGNORED}
    varying = {k for k in keys if len({str(r["settings"].get(k)) for r in reports}) > 1}
    groups: dict[str, list[dict]] = {}
    for report in reports:
        groups.setdefault(_key(report, varying), []).append(report)
    return groups


def _number(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, standard deviation) of the values present; the deviation needs two of them."""
    x = [v for v in values if v is not None]
    if not x:
        return None, None
    return float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else None


def _cell(mean: float | None, noise: float | None) -> str:
    if mean is None:
        return "-"
    return _number(mean) + ("" if noise is None else f" ± {_number(noise)}")


def _difference(mean: float, noise: float | None, base: float, base_noise: float | None) -> str:
    """mean - base, its ratio, and whether it is beyond twice the larger noise of the two."""
    diff = mean - base
    text = ("+" if diff >= 0 else "-") + _number(abs(diff))
    if base:
        text += f", x{mean / base:.2f}"
    noises = [n for n in (noise, base_noise) if n is not None]
    if noises:
        text += " (within noise)" if abs(diff) <= 2 * max(noises) else " (beyond noise)"
    return text


def compare_table(paths: Sequence[Path]) -> str:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    groups = group(reports)
    names = list(groups)
    runs = "; ".join(f"[{i}] {name} ({len(groups[name])})" for i, name in enumerate(names))
    header = [
        "metric",
        *(f"[{i}]" for i in range(len(names))),
        *(f"[{i}] - [0]" for i in range(1, len(names))),
    ]
    lines = [
        f"Configurations (runs): {runs}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for metric, read in METRICS.items():
        stats = [_stats([read(r["metrics"]) for r in groups[name]]) for name in names]
        if all(mean is None for mean, _ in stats):
            continue
        (base, base_noise), cells = stats[0], [_cell(*s) for s in stats]
        for mean, noise in stats[1:]:
            cells.append("-" if mean is None or base is None else _difference(mean, noise, base, base_noise))
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    if all(len(g) == 1 for g in groups.values()):
        lines += ["", "No repeats: run with --repeat N (or give repeated reports) for a noise estimate."]
    return "\n".join(lines)
