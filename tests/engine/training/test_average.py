"""The moving average of the weights: its arithmetic, and the trainer storing it in the bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine.checkpoint import load_bundle, save_bundle
from engine.exceptions import ConfigError
from engine.presets import get_preset
from engine.training.average import WARMUP_STEPS, WeightAverage
from engine.training.registry import build_task
from engine.training.task import Task
from engine.training.trainer import Trainer, TrainSettings
from engine.training.windows import batches
from ihuman.cli import main

TINY = get_preset("tiny")


def test_the_average_follows_the_exponential_formula_and_keeps_integer_buffers() -> None:
    module = nn.BatchNorm1d(3)  # float parameters and buffers, and an integer counter
    average = WeightAverage(module, decay=0.9)
    expected = module.weight.detach().clone()
    for step, value in enumerate((1.0, 2.0, 4.0)):
        module.weight.data.fill_(value)
        module.num_batches_tracked.fill_(step + 7)
        average.update(module, step)
        d = min(0.9, (1 + step) / (WARMUP_STEPS + step))
        expected = d * expected + (1 - d) * value
    state = average.state_dict(module)
    torch.testing.assert_close(state["weight"], expected)
    assert state["num_batches_tracked"] == 9  # not averaged: the module's own value
    assert average.decay_at(0) == pytest.approx(0.1) and average.decay_at(10_000) == 0.9
    with average.applied(module):
        torch.testing.assert_close(module.weight.data, expected)
    assert torch.equal(module.weight.data, torch.full((3,), 4.0))  # its own weights again
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(module, 1.0)


def _trainer(out: Path, steps: int, average: float | None) -> tuple[Trainer, Task]:
    task = build_task("pose", TINY, 64, 32)
    settings = TrainSettings(steps=steps, checkpoint_every=100, average=average)
    return Trainer(task.name, task.part, task.model, TINY, out, settings), task


def test_the_bundle_stores_the_average_and_a_resumed_run_continues_the_raw_weights(tmp_path: Path) -> None:
    first, task = _trainer(tmp_path, 3, average=0.5)
    first.run(batches(task, 2, seed=0, seconds=0.4, workers=0), task.loss)
    stored = load_bundle(tmp_path).parts["pose"].state_dict()
    raw = load_file(str(tmp_path / "raw_pose.safetensors"))
    assert all(torch.equal(raw[k], v) for k, v in first.model.state_dict().items())
    assert first.average is not None
    averaged = first.average.state_dict(first.model)
    assert all(torch.equal(stored[k], v) for k, v in averaged.items())
    assert not all(torch.equal(stored[k], raw[k]) for k in raw)  # the average is not the raw weights

    second, _ = _trainer(tmp_path, 4, average=0.5)
    assert second.resume() and second.step == 3 and second.average is not None
    assert all(torch.equal(raw[k], v) for k, v in second.model.state_dict().items())  # raw continues
    resumed = second.average.state_dict(second.model)
    assert all(torch.equal(stored[k], v) for k, v in resumed.items())  # and so does the average


def test_cli_averages_and_refuses_a_decay_outside_0_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "pose", "--out", str(tmp_path), "--batch", "2", "--res", "64x32", "--seconds", "0.4"]
    assert main([*args, "--steps", "2", "--eval-clips", "1", "--average", "0.9"]) == 0
    assert (tmp_path / "raw_pose.safetensors").is_file()
    assert load_bundle(tmp_path).meta["pose"]["average"] == 0.9
    with pytest.raises(SystemExit):
        main([*args, "--average", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_raw_weights_are_used_only_while_they_belong_to_the_stored_part(tmp_path: Path) -> None:
    """A run without averaging removes them; a part rewritten since (by another run) wins over them."""
    first, task = _trainer(tmp_path, 2, average=0.5)
    first.run(batches(task, 2, seed=0, seconds=0.4, workers=0), task.loss)
    plain, task = _trainer(tmp_path, 3, average=None)
    assert plain.resume()
    plain.run(batches(task, 2, seed=0, seconds=0.4, workers=0), task.loss)
    assert not (tmp_path / "raw_pose.safetensors").exists()  # stale once the part moved on
    stored = load_bundle(tmp_path).parts["pose"].state_dict()
    again, _ = _trainer(tmp_path, 4, average=0.5)
    assert again.resume() and all(torch.equal(stored[k], v) for k, v in again.model.state_dict().items())

    third, task = _trainer(tmp_path, 5, average=0.5)
    assert third.resume()
    third.run(batches(task, 2, seed=0, seconds=0.4, workers=0), task.loss)
    other = load_bundle(tmp_path).parts["pose"]
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)  # another task rewrites the shared part
    save_bundle(tmp_path, TINY, {"pose": other}, merge=True)
    fourth, _ = _trainer(tmp_path, 6, average=0.5)
    assert fourth.resume()
    assert all(torch.equal(v, fourth.model.state_dict()[k]) for k, v in other.state_dict().items())


def test_tasks_with_a_head_refuse_the_average(tmp_path: Path) -> None:
    task = build_task("audio", TINY)
    with pytest.raises(ConfigError, match="task head"):
        Trainer(task.name, task.part, task.model, TINY, tmp_path, TrainSettings(1, average=0.9), task.extra)
