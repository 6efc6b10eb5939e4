"""A latency run's report: the JSON (everything, per-frame timeline included), a Markdown summary
and PNG plots (latency CDF, per-stage time per segment, frame rate and A/V offset over time)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

STAGES = (  # (label, from, to) over a frame's timeline row
    ("waiting for audio", "audio_arrived_s", "low_res_start_s"),
    ("LR-A2V", "low_res_start_s", "low_res_end_s"),
    ("refiner", "low_res_end_s", "refine_end_s"),
    ("paced out", "refine_end_s", "emitted_s"),
)


def write(report: dict, out: Path) -> list[Path]:
    """report.json, report.md and the plots into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json", out / "report.md"]
    files[0].write_text(dumps(report) + "\n")
    try:
        files += plots(report, out)
    except ImportError:  # measured already: keep the numbers, say how to get the pictures
        log.warning("no plots: matplotlib is missing (pip install 'infinityhuman[bench]')")
    files[1].write_text(markdown(report, [p.name for p in files[2:]]))
    return files


def _rounded(value: object) -> object:
    """Floats to 4 decimals (0.1 ms in seconds): the timeline is thousands of them."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def dumps(report: dict) -> str:
    """The report as JSON; the per-frame timeline as columns and one row per line."""
    timeline = report["metrics"].get("timeline") or []
    body = {**report, "metrics": {**report["metrics"], "timeline": "@timeline"}}
    text = json.dumps(_rounded(body), indent=2)
    columns = list(timeline[0]) if timeline else []
    rows = ",\n      ".join(json.dumps(_rounded([row.get(c) for c in columns])) for row in timeline)
    table = f'{{\n      "columns": {json.dumps(columns)},\n      "rows": [\n      {rows}\n      ]\n    }}'
    return text.replace('"@timeline"', table)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def headline(metrics: dict) -> list[tuple[str, str]]:
    """The numbers a reader compares first, as (name, value) rows."""
    latency = metrics.get("added_latency_ms") or {}
    first = metrics.get("first_frame_ms") or {}
    rate = metrics.get("frame_rate") or {}
    rows = [
        (
            "added latency p50 / p90 / p99 / max (ms)",
            " / ".join(_ms(latency.get(q)) for q in ("p50", "p90", "p99", "max")),
        ),
        (
            "speaker -> picture of that moment p50 / p90 / p99 (ms)",
            " / ".join(_ms((metrics.get("picture_delay_ms") or {}).get(q)) for q in ("p50", "p90", "p99")),
        ),
        ("time to first frame, warm / cold (ms)", " / ".join(_ms(first.get(k)) for k in ("warm", "cold"))),
        (
            "fps sustained / worst 1 s",
            f"{rate.get('sustained_fps', 0):.2f} / {rate.get('worst_window_fps', 0):.1f}",
        ),
        (
            "frame interval p50 / p99 / jitter (ms)",
            " / ".join(_ms(rate.get(k)) for k in ("interval_p50_ms", "interval_p99_ms", "jitter_ms")),
        ),
        ("frames (fallback rate)", f"{metrics.get('frames', 0)} ({_share(metrics.get('fallback_rate'))})"),
        ("degrade changes", str(metrics.get("degrade_changes", "-"))),
    ]
    if metrics.get("outside_engine_ms") is not None:
        rows.append(
            (
                "of which outside the engine: network, codecs, buffers (ms, p50)",
                _ms(metrics["outside_engine_ms"]),
            )
        )
    av = metrics.get("av_sync")
    if av:
        rows.append(("A/V offset as received, mean (ms; + = video late)", _ms(av.get("mean_ms"))))
        rows.append(
            (
                "A/V drift (ms per minute)",
                "-" if av.get("drift_ms_per_min") is None else f"{av['drift_ms_per_min']:.1f}",
            )
        )
    rows += [
        ("CPU (% of one core)", _ms(metrics.get("cpu_percent"))),
        ("peak host memory (MB)", _ms(metrics.get("peak_rss_mb"))),
        ("peak GPU memory (MB)", _ms(metrics.get("peak_gpu_mb"))),
    ]
    return rows


def markdown(report: dict, images: Sequence[str]) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        f"# ihuman bench latency --mode {report['mode']}",
        "",
        f"{machine.get('cpu')} ({machine.get('cpus')} CPUs), GPU: {machine.get('gpu') or 'none'}, "
        f"device {settings.get('device')}; torch {machine.get('torch')}, commit {machine.get('commit')}, "
        f"{machine.get('time')}.",
        "",
        "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()),
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in headline(report["metrics"])),
        "",
    ]
    stage = report["metrics"].get("stage_ms")
    if stage:
        lines += [
            "Per stage (ms, p50 / p99): "
            + ", ".join(
                f"{name} {v['p50']:.0f} / {v['p99']:.0f}" for name, v in stage.items() if isinstance(v, dict)
            ),
            "",
        ]
    hidden = report["metrics"].get("refine_hidden_fraction")
    if hidden is not None:
        lines += [f"Refine time hidden under low-res work (two streams overlapped): {hidden:.0%}", ""]
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def plots(report: dict, out: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415 (the `bench` extra; only reports need it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    metrics, mode = report["metrics"], report["mode"]
    rows = metrics.get("timeline", [])
    files = []
    latencies = np.sort([r["latency_ms"] for r in rows if r.get("latency_ms") is not None])
    if latencies.size:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(latencies, np.arange(1, latencies.size + 1) / latencies.size)
        for q in (50, 90, 99):
            ax.axvline(np.percentile(latencies, q), ls=":", c="grey")
        ax.set(xlabel="added latency (ms)", ylabel="fraction of frames", title=f"latency CDF ({mode})")
        ax.grid(alpha=0.3)
        files.append(_save(fig, out / "latency_cdf.png"))
    segments = _stage_segments(rows)
    if segments:
        fig, ax = plt.subplots(figsize=(8, 4))
        bottom = np.zeros(len(segments))
        index = np.arange(len(segments))
        for name, _, _ in STAGES:
            values = np.array([s[name] for s in segments])
            ax.bar(index, values, bottom=bottom, label=name, width=0.9)
            bottom += values
        ax.set(
            xlabel="segment", ylabel="ms since its audio arrived", title="where the time goes, per segment"
        )
        ax.legend(fontsize=8)
        files.append(_save(fig, out / "stages.png"))
    times = [r["emitted_s"] for r in rows if r.get("emitted_s") is not None]
    av = (metrics.get("av_sync") or {}).get("offsets", [])
    if len(times) > 1:
        fig, axes = plt.subplots(2 if av else 1, 1, figsize=(8, 5 if av else 3), squeeze=False)
        edges = np.arange(np.floor(min(times)), np.ceil(max(times)) + 1)
        counts, _ = np.histogram(times, edges)
        axes[0, 0].step(edges[:-1], counts, where="post")
        axes[0, 0].set(ylabel="frames per second", title="frame rate over time")
        if av:
            t, offset = np.asarray(av).T
            axes[1, 0].plot(t - t[0], offset, "o-")
            axes[1, 0].set(xlabel="s", ylabel="A/V offset (ms)")
        files.append(_save(fig, out / "over_time.png"))
    return files


def _stage_segments(rows: list[dict]) -> list[dict[str, float]]:
    """One entry per segment (its first generated frame): ms spent in each stage; a segment the
    refiner skipped (degraded, or late) spends none in it."""
    seen, segments = set(), []
    for row in rows:
        r = {**row, "refine_end_s": row.get("refine_end_s") or row.get("low_res_end_s")}
        if any(r.get(key) is None for _, a, b in STAGES for key in (a, b)):
            continue
        if r["low_res_start_s"] in seen:
            continue
        seen.add(r["low_res_start_s"])
        segments.append({name: max(0.0, (r[b] - r[a]) * 1000) for name, a, b in STAGES})
    return segments


def _save(fig: object, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.close(fig)
    return path
