"""The harness's arithmetic on synthetic timelines with known answers: percentiles, frame rate
windows, jitter, matching frames to the audio sent, A/V offsets and drift; sweeps and comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.exceptions import EngineError
from ihuman.bench.calls import marked_speech
from ihuman.bench.compare import compare_table
from ihuman.bench.timeline import (
    ReceivedFrame,
    av_offsets,
    drift,
    frame_latency,
    frame_rate,
    mark_delays,
    stage_overlap,
    summary,
    video_mark_times,
)
from ihuman.bench.webrtc_mode import PIECE, RATE, Received
from ihuman.commands.bench import _sweep
from transport.stamps import FrameStamp


def test_summary_percentiles() -> None:
    s = summary(list(range(1, 101)))
    assert s is not None
    assert s["max"] == 100 and s["mean"] == 50.5
    assert (
        s["p50"] == pytest.approx(50.5)
        and s["p90"] == pytest.approx(90.1)
        and s["p99"] == pytest.approx(99.01)
    )
    assert summary([]) is None


def test_frame_rate_finds_the_worst_second_and_the_jitter() -> None:
    times = list(np.arange(0, 10, 0.04))  # 25 fps for 10 s ...
    times = [t for t in times if not 5.0 <= t < 5.4]  # ... but 10 frames missing after 5 s
    rate = frame_rate(times)
    assert rate is not None
    assert rate["worst_window_fps"] == pytest.approx(15, abs=1)
    assert rate["interval_p50_ms"] == pytest.approx(40)
    assert rate["interval_max_ms"] == pytest.approx(440)
    steady = frame_rate(list(np.arange(0, 10, 0.04)))
    assert steady is not None and steady["jitter_ms"] < 1e-6 and steady["sustained_fps"] == pytest.approx(25)


def test_a_frame_latency_is_its_arrival_minus_when_its_last_sample_left() -> None:
    sent = [10.0 + k for k in range(30)]  # mark k left at 10 + k s
    # A frame whose audio ends 250 ms after mark 3, received at 14.0: that sample left at 13.25.
    assert frame_latency(ReceivedFrame(14.0, FrameStamp(1, 3, 250, 0)), sent) == pytest.approx(750)
    # A stamp names its mark modulo 8: id 4 received at 22.9 s is mark 12 (sent at 22 s), not 4.
    assert frame_latency(ReceivedFrame(22.9, FrameStamp(1, 4, 100, 0)), sent) == pytest.approx(800)
    assert frame_latency(ReceivedFrame(1.0, None), sent) is None
    assert frame_latency(ReceivedFrame(1.0, FrameStamp(1, None)), sent) is None
    assert frame_latency(ReceivedFrame(5.0, FrameStamp(1, 3, 0, 0)), sent) is None  # not sent yet


def test_av_offset_and_drift_on_a_known_timeline() -> None:
    # Mark k's audio comes back at 2 + k s; its picture shows 30 ms + 1 ms per mark later; frames
    # every 40 ms around each onset each say how far from it they sit.
    sent = [1.0 + k for k in range(20)]
    frames, audio = [], []
    for k in range(20):
        heard = 2.0 + k
        audio.append((heard, k % 8))
        shown = heard + 0.030 + 0.001 * k
        for center_ms in range(-120, 121, 40):
            frames.append(ReceivedFrame(shown + center_ms / 1000, FrameStamp(k, k % 8, 0, center_ms)))
    offsets = av_offsets(video_mark_times(frames, sent), audio, sent)
    assert [round(o, 3) for _, o in offsets] == [round(30 + k, 3) for k in range(20)]
    assert drift(offsets) == pytest.approx(60.0)  # 1 ms per second = 60 ms per minute
    assert drift(offsets[:1]) is None
    delays = mark_delays(video_mark_times(frames, sent), audio, sent)  # each side, from the sending
    assert [(round(a, 3), round(v, 3)) for a, v in delays] == [(1000, 1030 + k) for k in range(20)]


def test_returned_audio_is_heard_at_its_own_rate_through_a_delivery_stall_and_a_lost_piece() -> None:
    # 6 s of marked audio in 20 ms pieces, each piece played 1 s after the stream's start plus its
    # place (with 3 ms of jitter); the pieces within 100 ms before the third mark are held and
    # come in one burst 150 ms late, and one piece before the fifth mark never comes.
    samples, onsets = marked_speech(np.zeros(RATE, np.float32), RATE, 6.0)
    rng = np.random.default_rng(0)
    received = Received()
    for place in range(0, samples.size, PIECE):
        came = 1.0 + place / RATE + rng.uniform(0, 0.003)
        if onsets[2] - 0.1 * RATE <= place <= onsets[2]:
            came = 1.0 + onsets[2] / RATE + 0.15
        if place == (onsets[4] // PIECE - 1) * PIECE:
            continue  # the piece just before the one holding the fifth mark is lost
        received.audio.append((came, place, samples[place : place + PIECE]))
    found = received.heard_marks()
    assert [i for _, _, i in found] == list(range(len(onsets)))
    truth = [1.0 + onset / RATE for onset in onsets]
    played, came = np.array([(p, c) for p, c, _ in found]).T
    assert np.abs(played - truth).max() < 0.004  # the stall and the gap move no mark
    late = came - truth  # heard when its piece came: the held mark as late as its piece
    assert late[2] > 0.14 and np.abs(np.delete(late, 2)).max() < 0.004
    assert received.audio_marks() == [(played, i) for played, _, i in found]
    assert Received().heard_marks() == []


def test_sweeps_expand_to_every_combination_with_parsed_values() -> None:
    combos = _sweep(["lr_steps=1,2", "codec=vp8,H264"])
    assert combos == [
        {"lr_steps": 1, "codec": "vp8"},
        {"lr_steps": 1, "codec": "h264"},
        {"lr_steps": 2, "codec": "vp8"},
        {"lr_steps": 2, "codec": "h264"},
    ]
    assert _sweep([]) == [{}]
    for bad in (["lr_steps"], ["lr_steps=0"], ["speed=1,2"], ["codec=av1"]):
        with pytest.raises(EngineError):
            _sweep(bad)


def _report(tmp: Path, name: str, lr_steps: int, p50: float) -> Path:
    path = tmp / f"{name}.json"
    report = {
        "settings": {"mode": "engine", "lr_steps": lr_steps, "seconds": 10},
        "metrics": {
            "added_latency_ms": {"p50": p50, "p99": p50 + 100},
            "frame_rate": {"sustained_fps": 25.0},
        },
    }
    path.write_text(json.dumps(report))
    return path


def test_compare_groups_repeats_and_judges_differences_against_their_noise(tmp_path: Path) -> None:
    paths = [
        _report(tmp_path, "a1", 1, 800),
        _report(tmp_path, "a2", 1, 810),
        _report(tmp_path, "a3", 1, 790),
        _report(tmp_path, "b1", 2, 805),
        _report(tmp_path, "b2", 2, 795),
        _report(tmp_path, "c1", 3, 1000),
        _report(tmp_path, "c2", 3, 1010),
    ]
    table = compare_table(paths)
    row = next(line for line in table.splitlines() if line.startswith("| latency p50"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "800 ± 10" and cells[2] == "800 ± 7.07"
    assert "within noise" in cells[4] and "beyond noise" in cells[5] and "x1.26" in cells[5]


def _segment_rows(
    low: tuple[float, float], refine: tuple[float, float] | None, frames: int = 3
) -> list[dict]:
    r0, r1 = refine or (None, None)
    row = {"low_res_start_s": low[0], "low_res_end_s": low[1], "refine_start_s": r0, "refine_end_s": r1}
    return [dict(row) for _ in range(3)]  # every frame of a segment repeats its stage times


def test_stage_overlap_is_the_refine_time_spent_beside_low_res_work() -> None:
    # Segment n refines in [1, 2) while segment n + 1's low-res work runs in [1, 1.5): half hidden;
    # the last refine [2, 3) overlaps nothing.
    rows = [
        *_segment_rows((0.0, 1.0), (1.0, 2.0)),
        *_segment_rows((1.0, 1.5), (2.0, 3.0)),
        *_segment_rows((3.0, 3.5), None),  # published at low res only
    ]
    assert stage_overlap(rows) == pytest.approx(0.25)
    serial = [*_segment_rows((0.0, 1.0), (1.0, 2.0)), *_segment_rows((2.0, 3.0), (3.0, 4.0))]
    assert stage_overlap(serial) == 0
    assert stage_overlap(_segment_rows((0.0, 1.0), None)) is None
