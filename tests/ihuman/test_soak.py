"""`ihuman bench soak`: its arithmetic on synthetic samples, and a short real run on loopback."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ihuman.bench.machine import cpu_shares, machine_cpu_ticks
from ihuman.bench.soak import markdown, slope_margin_per_10_min, slope_per_10_min, summarise
from ihuman.cli import main


def _sample(t: float, rss: float, tasks: int, offsets: tuple[float | None, float | None]) -> dict:
    server = {"rss_mb": rss, "open_files": 18, "threads": 9, "tasks": tasks, "sessions": 1}
    peers = [
        {"role": role, "fps": 25.0, "av_offset_ms": o}
        for role, o in zip(("talker", "viewer"), offsets, strict=True)
    ]
    return {"t_s": t, "server": server, "peers": peers}


def test_slopes_and_offsets_are_measured_after_the_warm_up() -> None:
    # Memory climbs 100 MB in the warm-up, then 1 MB a minute; the viewer's offset steps by 30 ms.
    samples = [_sample(0, 700, 40, (None, None)), _sample(60, 800, 31, (-40, -40))]
    samples += [_sample(60 + 60 * i, 800 + i, 30, (-40, -40 if i < 5 else -10)) for i in range(1, 11)]
    s = summarise(samples, warm_up_s=60)
    assert s["samples_after_warm_up"] == 11
    assert s["rss_mb"]["slope_per_10_min"] == pytest.approx(10.0)
    assert s["tasks"]["growth"] == 0 and s["tasks"]["first"] == 31
    talker, viewer = s["peers"]
    assert talker["av_offset_max_deviation_ms"] == 0 and talker["fps_p50"] == 25
    assert viewer["av_offset_start_ms"] == -40 and viewer["av_offset_max_deviation_ms"] == 30
    assert talker["av_offset_windows_over_a_frame"] == viewer["av_offset_windows_over_a_frame"] == 0
    assert slope_per_10_min([(0, 1.0)]) is None


def test_a_window_off_by_more_than_a_frame_is_counted() -> None:
    samples = [_sample(60 * i, 800, 30, (-40, -40 if i != 7 else 5)) for i in range(12)]
    talker, viewer = summarise(samples, warm_up_s=0)["peers"]
    assert talker["av_offset_windows_over_a_frame"] == 0
    assert viewer["av_offset_windows_over_a_frame"] == 1 and viewer["av_offset_windows"] == 12


def test_the_machine_cpu_shares_count_stolen_time_apart_from_busy_time() -> None:
    before = {"user": 100, "nice": 0, "system": 50, "idle": 800, "iowait": 50, "irq": 0, "softirq": 0}
    before["steal"] = 0
    # 1,000 ticks pass: 500 working, 300 idle, 200 given by the host to another guest.
    after = {**before, "user": 500, "system": 150, "idle": 1100, "steal": 200}
    shares = cpu_shares(before, after)
    assert shares == {"busy_pct": pytest.approx(50.0), "steal_pct": pytest.approx(20.0)}
    assert cpu_shares(after, after) == {"busy_pct": 0.0, "steal_pct": 0.0}  # no time passed
    ticks = machine_cpu_ticks()  # this machine's own (Linux)
    assert ticks is not None and ticks["idle"] > 0 and "steal" in ticks


def test_the_machine_cpu_is_summarised_and_reported() -> None:
    samples = [_sample(60 * i, 800, 30, (-40, -40)) for i in range(6)]
    for i, s in enumerate(samples):
        s["machine"] = {"busy_pct": 90.0, "steal_pct": 1.0 + 10 * (i == 4), "server_pct": 80.0}
    machine = summarise(samples, warm_up_s=60)["machine"]
    assert machine["steal_pct_p50"] == 1.0 and machine["steal_pct_max"] == 11.0
    assert machine["busy_pct_p50"] == 90.0 and machine["server_pct_max"] == 80.0
    report = {"summary": summarise(samples, warm_up_s=60), "machine": {}, "settings": {}}
    report |= {"minutes": 5, "talkers": 1, "viewers": 1, "sample_s": 60}
    assert "stolen by its host 1.0 / 11.0" in markdown(report)
    assert "machine" not in summarise([_sample(0, 800, 30, (-40, -40))], warm_up_s=0)  # older reports


def test_the_slope_margin_widens_with_noise_and_with_correlated_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(180) * 10.0  # 30 minutes, a sample every 10 s
    line = 0.5 / 600 * t  # +0.5 MB per 10 minutes
    quiet = slope_margin_per_10_min(list(zip(t, line + rng.normal(0, 1, t.size), strict=True)))
    loud = slope_margin_per_10_min(list(zip(t, line + rng.normal(0, 20, t.size), strict=True)))
    # The same spread of noise, but in swings lasting several samples (as between heap trims).
    swings = np.repeat(rng.normal(0, 20, t.size // 6), 6)
    swinging = slope_margin_per_10_min(list(zip(t, line + swings, strict=True)))
    assert quiet is not None and loud is not None and swinging is not None
    assert quiet < 0.5 < loud  # with 20 MB swings a 30-minute soak cannot tell +0.5 from 0
    assert swinging > 1.5 * loud
    # The interval holds the true slope in about 95 % of such soaks.
    held = 0
    for seed in range(200):
        noise = np.repeat(np.random.default_rng(seed).normal(0, 20, t.size // 6), 6)
        points = list(zip(t, line + noise, strict=True))
        held += abs(slope_per_10_min(points) - 0.5) <= slope_margin_per_10_min(points)
    assert held >= 180
    assert slope_margin_per_10_min([(0, 1.0), (10, 2.0), (20, 3.0)]) is None


@pytest.mark.slow
@pytest.mark.realtime
def test_a_short_soak_on_loopback_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    command = [sys.executable, "-m", "ihuman", "bench", "soak", "--preset", "tiny", "--random-weights"]
    command += ["--minutes", "0.15", "--talkers", "1", "--viewers", "1", "--sample-s", "3", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["talkers"] == 1 and report["viewers"] == 1 and len(report["samples"]) == 3
    assert report["settings"]["ray_workers"] == 0
    last = report["samples"][-1]
    assert last["server"]["sessions"] == 1 and last["server"]["rss_mb"] > 0
    assert 0 < last["server"]["heap_in_use_mb"] < last["server"]["rss_mb"]  # the C heap's part of it
    assert last["server"]["threads"] > 0
    assert [p["role"] for p in last["peers"]] == ["talker", "viewer"]
    assert last["peers"][0]["session"] == last["peers"][1]["session"]  # the viewer watches the talker
    # What the server did to that stream, by session: set beside an A/V offset that moved.
    stream = last["server"]["per_session"][last["peers"][0]["session"]]
    assert stream["target_delay_ms"] > 0 and stream["fallback_frames"] >= 0
    assert {"degrade_level", "relay_dropped_video", "relay_dropped_audio"} <= set(stream)
    assert stream["pacer_skipped_audio"] >= 0 and stream["pacer_skipped_video"] >= 0  # behind the clock
    assert all(p["fps"] > 10 for p in last["peers"])  # both receive the avatar
    assert any(p["av_offset_ms"] is not None for s in report["samples"] for p in s["peers"])  # marks read
    for peer in (p for s in report["samples"] for p in s["peers"] if p["av_offset_ms"] is not None):
        offsets = [seen - heard for heard, seen in peer["mark_delays_ms"]]  # each mark's, both sides
        assert abs(statistics.median(offsets) - peer["av_offset_ms"]) < 0.2
        assert peer["av_offset_on_arrival_ms"] is not None  # the marks' pieces as they came
    peers = report["summary"]["peers"]
    assert all(0 < p["latency_p50_ms"] < 5000 for p in peers), peers  # the mark's picture came back
    assert (out / "soak.png").stat().st_size > 0
    assert "latency p50" in (text := (out / "report.md").read_text()) and "C heap held free" in text
    assert report["summary"]["rss_mb"]["slope_margin_per_10_min"] is None  # 2 samples after warm-up
    assert all(p["av_offset_windows_over_a_frame"] <= p["av_offset_windows"] for p in peers)
    assert "more than a frame" in text
    # The machine's CPU in each window: the server's share of it was busy, none of it vanished.
    machine = last["machine"]
    assert 0 < machine["server_pct"] <= machine["busy_pct"] + 5 and 0 <= machine["steal_pct"] < 100
    assert "stolen by its host" in text


def test_bad_soak_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "soak", "--minutes", "0", "--out", str(tmp_path / "soak")]) == 2
    assert "--minutes and --sample-s must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "soak").exists()
