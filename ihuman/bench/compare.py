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


def _key(report: dict) -> str:
    settings = {k: v for k, v in report["settings"].items() if k not in IGNORED}
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def group(reports: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for report in reports:
        groups.setdefault(_key(report), []).append(report)
    return groups


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, standard deviation) of the values present; the deviation needs two of them."""
    x = [v for v in values if v is not None]
    if not x:
        return None, None
    return float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else None


def compare_table(paths: Sequence[Path]) -> str:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    groups = group(reports)
    names = list(groups)
    lines = [
        "Configurations (runs): " + "; ".join(f"[{i}] {n} ({len(groups[n])})" for i, n in enumerate(names)),
        "",
    ]
    header = "| metric | " + " | ".join(f"[{i}]" for i in range(len(names)))
    header += " | " + " | ".join(f"[{i}] - [0]" for i in range(1, len(names))) + " |"
    lines += [header, "|" + "---|" * (1 + len(names) + max(0, len(names) - 1))]
    for metric, read in METRICS.items():
        cells, diffs = [], []
        base_mean, base_noise = _stats([read(r["metrics"]) for r in groups[names[0]]])
        for name in names:
            mean, noise = _stats([read(r["metrics"]) for r in groups[name]])
            cells.append(
                "-" if mean is None else f"{mean:.3g}" + ("" if noise is None else f" ± {noise:.2g}")
            )
            if name == names[0]:
                continue
            if mean is None or base_mean is None:
                diffs.append("-")
                continue
            diff = mean - base_mean
            noises = [n for n in (noise, base_noise) if n is not None]
            verdict = (
                ""
                if not noises
                else (" (within noise)" if abs(diff) < 2 * max(noises) else " (beyond noise)")
            )
            ratio = f", x{mean / base_mean:.2f}" if base_mean else ""
            diffs.append(f"{diff:+.3g}{ratio}{verdict}")
        if all(c == "-" for c in cells):
            continue
        lines.append(
            f"| {metric} | " + " | ".join(cells) + (" | " + " | ".join(diffs) if diffs else "") + " |"
        )
    if all(len(g) == 1 for g in groups.values()):
        lines += ["", "No repeats: run with --repeat N (or give repeated reports) for a noise estimate."]
    return "\n".join(lines)
