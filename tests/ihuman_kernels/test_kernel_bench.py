"""ihuman.bench.kernels: the paper shapes come from the config, and the script runs (smoke, interpreter)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.presets import get_preset
from ihuman.bench.kernels import Shape, paper_shapes


def test_paper_shapes_follow_the_config() -> None:
    shapes = {s.name: s for s in paper_shapes()}
    lr, hr = shapes["LR self-attention"], shapes["HR self-attention"]
    assert (lr.lq, lr.groups) == (7040, (880, 4400, 1760))
    assert (hr.lq, hr.groups, hr.head_dim) == (14400, (3600, 3600, 7200), 128)
    audio = shapes["audio cross-attention"]
    assert (audio.lk, audio.batch) == (get_preset("paper").audio_tokens_per_latent, 7)
    # Block-causal pairs: the context skips the new tokens' keys.
    assert Shape("x", 1, 1, 10, 10, 64, (2, 3, 5)).pairs(masked=True) == 2 * 2 + 3 * 5 + 5 * 10


@pytest.mark.slow
def test_bench_smoke_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "ihuman.bench.kernels", "--smoke", "--runs", "2", "--warmup", "1"]
    subprocess.run(
        [*command, "--dtype", "float32", "--out", str(out)], check=True, env=env, capture_output=True
    )
    report = json.loads(out.read_text())
    assert report["torch"] and report["triton"] and report["device"]
    assert all(row["ms"]["ours_full"] > 0 for row in report["rows"])
