"""`ihuman train lr-a2v|refiner`: segments built like the live engine's, trained into the bundle."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.checkpoint import BundleError, load_bundle, save_bundle
from engine.parts import Parts
from engine.training.tasks import batches, build_task, held_out
from engine.training.trainer import Trainer, TrainSettings
from tests.factories import micro_config, randomize_

MICRO = micro_config()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle holding the frozen parts the generator tasks read (random, as if trained)."""
    parts = Parts.random(MICRO, seed=2)
    for module in (parts.vae, parts.audio, parts.pose):
        randomize_(module, std=0.05)
    save_bundle(tmp_path, MICRO, {"vae": parts.vae, "audio": parts.audio, "pose": parts.pose})
    return tmp_path


def _seconds(task: object) -> float:
    return task.spec.frames / 25 + 0.2  # type: ignore[attr-defined]


def test_lr_a2v_segments_follow_the_stream_layout(bundle: Path) -> None:
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=_seconds(task), workers=0))
    data = task.make_batch(window, start_of_stream=False)
    s = MICRO.segment
    assert data.motion.shape[2] == s.motion_latents and data.target.shape[2] == s.new_latents
    assert data.audio.shape[:3] == (2, s.motion_latents + s.new_latents, MICRO.audio_tokens_per_latent)
    # The prefix is the reference frame encoded alone: the stream the engine's decoder is primed with.
    with torch.no_grad():
        prefix = task.parts.vae.encode_image(window["reference"])
    torch.testing.assert_close(data.prefix, prefix)
    start = task.make_batch(window, start_of_stream=True)
    assert start.motion.shape[2] == 0 and torch.equal(start.target, data.target)
    assert torch.equal(start.audio, data.audio[:, s.motion_latents :])


def test_refiner_batches_use_true_or_predicted_pose(bundle: Path) -> None:
    task = build_task("refiner", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=_seconds(task), workers=0))
    true, predicted = (task.make_batch(window, predicted_pose=p) for p in (False, True))
    assert true.pose.shape == predicted.pose.shape == (2, 8, 4 * MICRO.segment.new_latents, *MICRO.pose_size)
    assert not torch.equal(true.pose, predicted.pose)
    assert true.lr.shape[-2:] == MICRO.lr_latent_grid and true.target.shape[-2:] == MICRO.hr_latent_grid


@pytest.mark.parametrize("name", ["lr-a2v", "refiner"])
def test_generator_trains_into_the_bundle_beside_the_frozen_parts(name: str, bundle: Path) -> None:
    task = build_task(name, MICRO, bundle=bundle)
    frozen = {k: v.clone() for k, v in task.parts.vae.state_dict().items()}
    trainer = Trainer(task.name, task.part, task.model, MICRO, bundle, TrainSettings(steps=2, log_every=1))
    trainer.run(batches(task, 2, seed=0, seconds=_seconds(task), workers=0), task.loss)
    assert sorted(load_bundle(bundle).parts) == sorted(["vae", "audio", "pose", task.part])
    assert all(torch.equal(v, task.parts.vae.state_dict()[k]) for k, v in frozen.items())  # frozen
    metrics = task.evaluate(held_out(task, clips=1, seconds=_seconds(task), batch=2))
    assert metrics and all(math.isfinite(v) for v in metrics.values())


def test_missing_parts_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no trained vae, audio"):
        build_task("lr-a2v", MICRO, bundle=tmp_path)
