"""The GPU-call helpers measure what they say, on this CPU at toy sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.parts import Parts
from ihuman.bench import ceilings, stages
from tests.factories import micro_config


def test_segment_pieces_are_timed_and_their_flops_counted(tmp_path: Path) -> None:
    parts = Parts.random(micro_config())
    profile = tmp_path / "profile.txt"
    report = stages.run(parts, segments=2, lr_steps=2, profile=profile)
    assert report["lr_steps"] == 2 and report["precision"] == "float32"
    assert set(report["pieces"]) == set(stages.PIECES)
    for piece in report["pieces"].values():
        assert piece["wall_ms"] > 0 and piece["gpu_ms"] is None  # no CUDA events on a CPU
        assert piece["tflop"] > 0
        assert piece["tflops"] == pytest.approx(piece["tflop"] / (piece["wall_ms"] / 1000))
    assert "aten::" in profile.read_text()  # the profiler's table of one more segment


def test_ceilings_count_the_work_of_what_they_time() -> None:
    report = ceilings.measure(torch.device("cpu"), size=64, copy_mib=1, runs=2)
    assert report["matmul"]["tflops"] == pytest.approx(2 * 64**3 / (report["matmul"]["ms"] * 1e-3) / 1e12)
    assert report["copy"]["gb_per_s"] == pytest.approx(2 * 2**20 / (report["copy"]["ms"] * 1e-3) / 1e9)
