"""The mouth judge: an independent reader of the mouth opening that no training loss reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_bundle
from engine.data.dataset import ClipWindows, WindowSpec
from engine.models.mouth_judge import MouthJudge
from engine.parts import REQUIRED, Parts
from engine.presets import get_preset
from engine.training.part_tasks import photometric_jitter
from ihuman.cli import main
from tests.factories import micro_config

FIXTURES = Path(__file__).parents[2] / "fixtures" / "procedural"
ROOT = Path(__file__).parents[3]


def test_the_judge_learns_the_opening_from_rendered_frames() -> None:
    window = ClipWindows(FIXTURES, WindowSpec(frames=8, width=160, height=96))[1]  # the mouth moves
    judge = MouthJudge(get_preset("tiny"))
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3)
    errors = []
    for _ in range(60):
        loss = (judge.read(window["frames"], window["points"]) - window["mouth_open"]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(float(loss.detach()))
    assert window["mouth_open"].std() > 0.2
    assert errors[-1] < 0.3 * errors[0], (errors[0], errors[-1])


def test_a_change_of_the_whole_frames_colour_cannot_move_it() -> None:
    """Each crop is normalised per channel: a gain and an offset of a colour channel (what a lip
    loss through a reader once learnt to use) reads the same."""
    window = ClipWindows(FIXTURES, WindowSpec(frames=4, width=160, height=96))[1]
    judge = MouthJudge(get_preset("tiny")).eval()
    frames = window["frames"] * 0.6 + 0.2  # room for the change without clipping
    tinted = (
        frames * torch.tensor([1.3, 0.8, 1.0])[:, None, None] + torch.tensor([-0.05, 0.1, 0.0])[:, None, None]
    )
    with torch.no_grad():
        torch.testing.assert_close(
            judge.read(tinted, window["points"]), judge.read(frames, window["points"]), atol=1e-4, rtol=1e-4
        )


def test_jitter_blurs_tints_and_noises_within_range() -> None:
    frames = torch.rand(6, 3, 24, 40)
    jittered = photometric_jitter(frames, torch.Generator().manual_seed(0))
    assert jittered.shape == frames.shape and jittered.min() >= 0 and jittered.max() <= 1
    assert not torch.allclose(jittered, frames, atol=0.02)


def test_no_training_loss_reads_the_judge() -> None:
    """Only its own task, the evaluations and the tests name MouthJudge: the generators' losses, which
    live in engine/training/generators.py and steps.py, never build or read it."""
    for path in (ROOT / "engine" / "training" / "generators.py", ROOT / "engine" / "training" / "steps.py"):
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
        assert not {"MouthJudge", "mouth_judge", "mouth_opening"} & names, path


def test_lipsync_without_a_judge_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = Parts.random(micro_config(), seed=0)
    save_bundle(tmp_path, parts.config, {name: getattr(parts, name) for name in REQUIRED})
    assert main(["eval", "lipsync", "--bundle", str(tmp_path), "--characters", "1"]) == 2
    assert "ihuman train mouth-judge" in capsys.readouterr().err
