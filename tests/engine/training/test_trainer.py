import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_bundle
from engine.config import get_preset
from engine.exceptions import ConfigError
from engine.training.tasks import PART_TASKS, Task, batches, build_task, held_out
from engine.training.trainer import Trainer, TrainSettings
from ihuman.cli import main

TINY = get_preset("tiny")


def _task(name: str) -> Task:
    """The task at a small frame size (the audio task renders at LR: its frames are unused)."""
    return build_task(name, TINY, 64, 32) if name != "audio" else build_task(name, TINY)


def _seconds(task: Task) -> float:
    """The shortest on-the-fly clip that holds one window."""
    return task.spec.frames / task.spec.time.fps


def _train(task_name: str, out: Path, steps: int) -> Trainer:
    task = _task(task_name)
    trainer = Trainer(
        task.name,
        task.part,
        task.model,
        TINY,
        out,
        TrainSettings(steps=steps, checkpoint_every=2, log_every=1),
        task.extra,
    )
    trainer.resume()
    trainer.run(batches(task, 2, seed=trainer.step, seconds=_seconds(task), workers=0), task.loss)
    return trainer


@pytest.mark.parametrize("task_name", PART_TASKS)
def test_every_task_trains_into_a_bundle_and_evaluates(task_name: str, tmp_path: Path) -> None:
    trainer = _train(task_name, tmp_path, steps=2)
    bundle = load_bundle(tmp_path)
    assert list(bundle.parts) == [build_task(task_name, TINY).part]
    assert bundle.meta[task_name]["step"] == 2
    task = _task(task_name)
    task.model.load_state_dict(trainer.model.state_dict())
    task.extra = trainer.extra_parts
    metrics = task.evaluate(held_out(task, clips=2, seconds=_seconds(task), batch=2))
    assert all(math.isfinite(v) for v in metrics.values())


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    first = _train("pose", tmp_path, steps=3)  # checkpoints at 2 and at the end (3)
    weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    second = _train("pose", tmp_path, steps=5)
    assert second.step == 5
    rows = [json.loads(line) for line in (tmp_path / "train_pose.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert (tmp_path / "train_pose.csv").read_text().count("\n") == 6  # header + 5 rows
    resumed = build_task("pose", TINY, 64, 32).model
    Trainer("pose", "pose", resumed, TINY, tmp_path, TrainSettings(steps=5)).resume()
    assert not all(torch.equal(resumed.state_dict()[k], v) for k, v in weights.items())  # it trained on


def test_parts_of_one_bundle_accumulate(tmp_path: Path) -> None:
    _train("pose", tmp_path, steps=1)
    _train("audio", tmp_path, steps=1)
    assert sorted(load_bundle(tmp_path).parts) == ["audio", "pose"]


def test_clips_shorter_than_a_window_are_refused() -> None:
    task = _task("audio")
    with pytest.raises(ConfigError, match="shorter than a window"):
        next(batches(task, 2, seed=0, seconds=_seconds(task) / 2, workers=0))


def test_learning_rate_warms_up_then_decays_by_step() -> None:
    s = TrainSettings(steps=1000, lr=1e-3, warmup=100, final_lr_ratio=0.1)
    rates = [s.lr_at(i) for i in range(1000)]
    assert rates[0] == pytest.approx(1e-5) and rates[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[99:]))
    assert rates[-1] == pytest.approx(1e-4, rel=1e-3)


def test_cli_trains_resumes_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "pose", "--out", str(tmp_path), "--batch", "2", "--res", "64x32", "--seconds", "0.4"]
    assert main([*args, "--steps", "2", "--eval-clips", "1"]) == 0
    assert main([*args, "--steps", "3", "--eval-clips", "1"]) == 0
    out = capsys.readouterr().out
    assert "resuming pose at step 2" in out
    assert json.loads((tmp_path / "eval_pose.json").read_text())["step"] == 3
    assert main(["train", "pose", "--out", str(tmp_path / "x"), "--crop", "32"]) == 2
    assert "--crop is for the vae task" in capsys.readouterr().err


def test_vae_trains_at_half_scale_too() -> None:
    task = build_task("vae", TINY, 64, 32, crop=16, half_scale=1.0)
    batch = next(batches(task, 2, seed=0, seconds=_seconds(task), workers=0))
    loss, stats = task.loss(batch)
    assert loss.requires_grad and math.isfinite(stats["psnr"])
    with pytest.raises(ConfigError, match="half-scale"):
        build_task("pose", TINY, half_scale=0.5)
