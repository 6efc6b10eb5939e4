import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from engine.checkpoint import BundleError, load_bundle
from engine.data.clip import make_clip
from engine.exceptions import ConfigError
from engine.pose import keypoints as kp
from engine.presets import get_preset
from engine.training.part_tasks import MOUTH_JITTER_PX, jitter_mouth
from engine.training.registry import PART_TASKS, build_task
from engine.training.task import Task
from engine.training.trainer import Trainer, TrainSettings
from engine.training.windows import batches, held_out
from ihuman.cli import main

TINY = get_preset("tiny")


def _task(name: str) -> Task:
    """The task at a small frame size (the audio task renders at LR: its frames are unused)."""
    return build_task(name, TINY, 64, 32) if name != "audio" else build_task(name, TINY)


def _seconds(task: Task) -> float:
    """The shortest on-the-fly clip that holds one window."""
    return task.spec.frames / task.spec.time.fps


def _train(task_name: str, out: Path, steps: int) -> Trainer:
    task = _task(task_name) if task_name != "mouth" else build_task("mouth", TINY, 64, 32, bundle=out)
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


def test_mouth_reader_trains_on_the_frozen_pose_head(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="train it first"):
        build_task("mouth", TINY, bundle=tmp_path)
    _train("pose", tmp_path, steps=1)
    before = load_bundle(tmp_path).parts["pose"].state_dict()
    trainer = _train("mouth", tmp_path, steps=2)
    after = load_bundle(tmp_path).parts["pose"].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("mouth.") for k in changed)  # the keypoints stay as trained
    task = build_task("mouth", TINY, 64, 32, bundle=tmp_path)
    metrics = task.evaluate(held_out(task, clips=2, seconds=2.0, batch=2))  # long enough to speak
    assert set(metrics) == {"held_out_mouth_corr", "held_out_mouth_l1"} and trainer.step == 2
    assert all(math.isfinite(v) for v in metrics.values())


def test_mouth_jitter_is_the_size_of_the_pose_heads_error() -> None:
    points = make_clip(3, 2.0, 160, 96).points
    moved = jitter_mouth(points, 96, torch.Generator().manual_seed(0))
    shift = (moved[:, kp.LIPS].mean(1) - points[:, kp.LIPS].mean(1)) * 96  # canvas units -> pixels
    assert shift.abs().max() <= MOUTH_JITTER_PX + 1e-4 and shift.abs().max() > 0.5 * MOUTH_JITTER_PX
    ratio = (moved[:, 0] - moved[:, kp.LIPS].mean(1)).norm(dim=-1) / (
        points[:, 0] - points[:, kp.LIPS].mean(1)
    ).norm(dim=-1)
    assert ratio.min() >= 0.8 - 1e-4 and ratio.max() <= 1.2 + 1e-4 and ratio.std() > 0.05


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


def test_zero_steps_store_the_part_as_built(tmp_path: Path) -> None:
    """`--steps 0` stores the part untrained (a generator whose estimate is its picture)."""
    trainer = _train("pose", tmp_path, steps=0)
    stored = load_bundle(tmp_path).parts["pose"].state_dict()
    assert stored and all(torch.equal(stored[k], v) for k, v in trainer.model.state_dict().items())
    assert load_bundle(tmp_path).meta["pose"]["step"] == 0


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


def test_vae_loss_weighs_the_mouth_more() -> None:
    from engine.training.part_tasks import MOUTH_WEIGHT, _mouth_weight  # noqa: PLC0415

    clip = make_clip(4, 0.4, 160, 96)
    batch = {"points": clip.points[None, :2]}
    weight = _mouth_weight(batch, (160, 96), (8, 16), (64, 96))  # a window at top 8, left 16
    assert weight.shape == (1, 1, 2, 64, 96) and set(weight.unique().tolist()) == {1.0, 1 + MOUTH_WEIGHT}
    lips = kp.to_pixels(clip.points[0, kp.LIPS].mean(0), 160, 96)
    y, x = int(lips[1]) - 8, int(lips[0]) - 16
    assert weight[0, 0, 0, y, x] == 1 + MOUTH_WEIGHT and weight[0, 0, 0, 0, 0] == 1


@pytest.mark.slow
def test_mouth_reader_also_reads_the_bundles_reconstructions(tmp_path: Path) -> None:
    """With a trained autoencoder in the bundle, the reader trains on its reconstructions too (what
    the engine shows the head) and its evaluation reports both readings."""
    _train("pose", tmp_path, steps=1)
    _train("vae", tmp_path, steps=1)
    task = build_task("mouth", TINY, 64, 32, bundle=tmp_path)
    assert task.vae is not None and not task.vae.training
    window = next(batches(task, 2, seed=0, seconds=2.0, workers=0))
    rebuilt = task.reconstruct(window)
    assert rebuilt.shape == window["frames"].shape and not torch.equal(rebuilt, window["frames"])
    metrics = task.evaluate(held_out(task, clips=2, seconds=2.0, batch=2))
    assert {"held_out_mouth_corr_reconstructed", "held_out_mouth_l1_reconstructed"} <= set(metrics)
    assert metrics["held_out_mouth_l1"] != metrics["held_out_mouth_l1_reconstructed"]


def test_a_part_the_bundle_holds_without_training_state_is_fine_tuned(tmp_path: Path) -> None:
    """An exported bundle has weights but no optimizer or step: training starts from its weights."""
    trained = _train("pose", tmp_path, steps=2).model.state_dict()
    (tmp_path / "train_pose.json").unlink()
    (tmp_path / "optimizer_pose.safetensors").unlink()
    task = build_task("pose", TINY, 64, 32)
    trainer = Trainer("pose", "pose", task.model, TINY, tmp_path, TrainSettings(steps=3))
    assert trainer.resume() is False and trainer.fine_tuning and trainer.step == 0
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in trained.items())
    fresh = Trainer("pose", "pose", build_task("pose", TINY).model, TINY, tmp_path / "new", TrainSettings(1))
    assert fresh.resume() is False and not fresh.fine_tuning
