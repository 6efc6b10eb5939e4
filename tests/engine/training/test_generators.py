"""`ihuman train lr-a2v|refiner`: segments built like the live engine's, trained into the bundle."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from engine.checkpoint import BundleError, load_bundle, save_bundle
from engine.config import DropoutConfig
from engine.models.refiner import PGRefiner
from engine.parts import DEFAULT_BUNDLE, Parts
from engine.pose import keypoints as kp
from engine.training.generators import LIP_CROP_CELLS, LIP_CROP_MARGIN, MOTION_NOISE
from engine.training.registry import build_task
from engine.training.steps import lr_a2v_step, refiner_step
from engine.training.trainer import Trainer, TrainSettings
from engine.training.windows import batches, held_out
from tests.engine.training.conftest import MICRO, window_seconds
from tests.factories import randomize_, refiner_batch


def test_lr_a2v_segments_follow_the_stream_layout(bundle: Path) -> None:
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0))
    noised = task.make_batch(window, start_of_stream=False)  # training: motion latents get noise
    task.model.eval()
    data = task.make_batch(window, start_of_stream=False)
    assert torch.equal(noised.target, data.target) and not torch.equal(noised.motion, data.motion)
    assert (noised.motion - data.motion).std() < MOTION_NOISE
    s = MICRO.segment
    assert data.motion.shape[2] == s.motion_latents and data.target.shape[2] == s.new_latents
    assert data.audio.shape[:3] == (2, s.motion_latents + s.new_latents, MICRO.audio_tokens_per_latent)
    # The prefix is the reference frame encoded alone: the stream the engine's decoder is primed with.
    with torch.no_grad():
        prefix = task.parts.vae.encode_image(window["reference"])
    torch.testing.assert_close(data.prefix, prefix)
    # A stream start continues the still history the engine starts from: the reference held still.
    start = task.make_batch(window, start_of_stream=True)
    with torch.no_grad():
        still = task.parts.vae.encode_still(window["reference"], s.motion_latents)[:, :, 1:]
    torch.testing.assert_close(start.motion, still)
    assert torch.equal(start.target, data.target) and torch.equal(start.audio, data.audio)
    # Every estimate starts from the reference held still, as the engine's (stages.Reference).
    with torch.no_grad():
        torch.testing.assert_close(data.still, task.parts.vae.still_latent(window["reference"]))


def test_a_still_clip_costs_nothing_at_init(bundle: Path) -> None:
    """The skip is in the loss path: a window in which the person holds still is the still
    reference's latents, which a fresh LR-A2V estimates exactly, so its flow loss is zero."""
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0))
    still = {**window, "frames": window["reference"][:, None].expand_as(window["frames"]).clone()}
    task.model.eval()  # no motion-latent noise: the window exactly as it is
    result = lr_a2v_step(task.model, task.make_batch(still, start_of_stream=False))
    moving = lr_a2v_step(task.model, task.make_batch(window, start_of_stream=False))
    assert result.loss < 1e-9 and moving.loss > 1e4 * result.loss


def test_lr_a2v_loss_weighs_the_mouth_cells(bundle: Path) -> None:
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0))
    data = task.make_batch(window)
    h, w = MICRO.lr_latent_grid
    assert data.weight is not None and data.weight.shape == (2, 1, 1, h, w)
    lips = kp.to_pixels(window["points"][0, :, kp.LIPS].mean((0, 1)), MICRO.lr.width, MICRO.lr.height)
    row, col = int(lips[1] / MICRO.lr.height * h), int(lips[0] / MICRO.lr.width * w)
    peak = data.weight[0, 0, 0]
    assert peak[row, col] > 0.5 * peak.max() and peak.max() > 5 and peak.min() < 0.5 * peak.max()


def test_refiner_batches_use_true_or_predicted_pose(bundle: Path) -> None:
    task = build_task("refiner", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0))
    true, predicted = (task.make_batch(window, predicted_pose=p) for p in (False, True))
    assert true.pose.shape == predicted.pose.shape == (2, 8, 4 * MICRO.segment.new_latents, *MICRO.pose_size)
    assert not torch.equal(true.pose, predicted.pose)
    assert true.lr.shape[-2:] == MICRO.lr_latent_grid and true.target.shape[-2:] == MICRO.hr_latent_grid


def test_refiner_loss_space_weighs_late_times_alike() -> None:
    """The refiner's loss compares estimates (FlowConfig.refiner_loss): at t = 0, where it samples,
    that is the velocity loss; at t = 0.9 the velocity loss would weigh the same error 100x."""
    losses = {}
    for space in ("estimate", "velocity"):
        c = MICRO.replace(
            dropout=DropoutConfig(0, 0, 0, 0, 0), flow=dataclasses.replace(MICRO.flow, refiner_loss=space)
        )
        torch.manual_seed(0)  # the same weights, batch and noise for both
        model = randomize_(PGRefiner(c), std=0.05)
        b = refiner_batch(c, batch=2)
        noise = torch.randn_like(b.target)
        for t in (0.0, 0.9):
            generator = torch.Generator().manual_seed(1)  # the same degradation draws
            step = refiner_step(model, b, generator=generator, noise=noise, t=torch.full((2,), t))
            losses[space, t] = float(step.loss.detach())
    assert losses["estimate", 0.0] > 0
    assert losses["estimate", 0.0] == pytest.approx(losses["velocity", 0.0], rel=1e-4)
    assert losses["velocity", 0.9] == pytest.approx(100 * losses["estimate", 0.9], rel=1e-3)


@pytest.mark.parametrize("name", ["lr-a2v", "refiner"])
def test_generator_trains_into_the_bundle_beside_the_frozen_parts(name: str, bundle: Path) -> None:
    task = build_task(name, MICRO, bundle=bundle)
    frozen = {k: v.clone() for k, v in task.parts.vae.state_dict().items()}
    trainer = Trainer(task.name, task.part, task.model, MICRO, bundle, TrainSettings(steps=2, log_every=1))
    trainer.run(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0), task.loss)
    assert sorted(load_bundle(bundle).parts) == sorted(["vae", "audio", "pose", task.part])
    assert all(torch.equal(v, task.parts.vae.state_dict()[k]) for k, v in frozen.items())  # frozen
    metrics = task.evaluate(held_out(task, clips=1, seconds=window_seconds(task), batch=2))
    assert metrics and all(math.isfinite(v) for v in metrics.values())


def test_missing_parts_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no trained vae, audio"):
        build_task("lr-a2v", MICRO, bundle=tmp_path)


@pytest.fixture
def full_bundle(bundle: Path) -> Path:
    """The frozen parts plus trained-looking generators and a hand evaluator."""
    parts = Parts.random(MICRO, seed=3)
    hand = build_task("hand-evaluator", MICRO).model
    for module in (parts.lr_a2v, parts.refiner, hand):
        randomize_(module, std=0.05)
    save_bundle(bundle, MICRO, {"lr_a2v": parts.lr_a2v, "refiner": parts.refiner, "hand": hand}, merge=True)
    return bundle


def test_distillation_keeps_the_teacher_and_trains_a_one_step_student(full_bundle: Path) -> None:
    teacher = load_bundle(full_bundle, ["refiner"]).parts["refiner"]
    task = build_task("distill", MICRO, bundle=full_bundle)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in task.model.state_dict().items())
    trainer = Trainer(
        task.name, task.part, task.model, MICRO, full_bundle, TrainSettings(steps=2, log_every=1)
    )
    trainer.run(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0), task.loss)
    saved = load_bundle(full_bundle, ["refiner", "refiner_teacher"]).parts
    assert all(
        torch.equal(v, teacher.state_dict()[k]) for k, v in saved["refiner_teacher"].state_dict().items()
    )
    assert not all(torch.equal(v, teacher.state_dict()[k]) for k, v in saved["refiner"].state_dict().items())
    metrics = task.evaluate(held_out(task, clips=1, seconds=window_seconds(task), batch=2))
    assert metrics["teacher_steps"] == 4 and math.isfinite(metrics["student_vs_teacher_psnr_db"])
    assert metrics["speedup"] > 0  # reported, not asserted: timings belong to benchmarks


def test_hand_feedback_learning_moves_the_generator_toward_the_reward(full_bundle: Path) -> None:
    task = build_task("hand-refl", MICRO, bundle=full_bundle)
    task.parts.pose.visible.bias.data.fill_(10.0)  # an untrained head: call every hand visible
    window = next(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0))
    data = task.make_batch(window, start_of_stream=False)
    reward = task._reward(data, task.sample(data, grad=True, steps=task.steps), frame=0)
    assert reward.numel() > 0 and reward.requires_grad  # hands were found and scored
    (1 - reward).mean().backward()  # L_hand alone reaches the generator through the decoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    assert all(p.grad is None for p in task.evaluator.parameters())  # the reward model stays frozen
    loss, stats = task.loss(window)
    assert loss.requires_grad and {"flow", "hand_reward"} <= set(stats)


def test_lr_a2v_evaluation_says_how_much_the_model_listens(bundle: Path) -> None:
    """A fresh LR-A2V is the identity on its residual paths and ignores the audio (gain exactly 0);
    with weights that read the audio, another sample's audio changes the mouth loss."""
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    evaluation = held_out(task, 2, window_seconds(task), 2)
    assert task.evaluate(evaluation)["held_out_mouth_audio_gain"] == 0.0
    randomize_(task.model, std=0.2)
    assert task.evaluate(evaluation)["held_out_mouth_audio_gain"] != 0.0


def _paste(frames: torch.Tensor, window: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """frames [B, T, 3, H, W] with the decoded windows [B, 3, T, S, S] put back at their corners."""
    out, side = frames.clone(), window.shape[-1]
    for i, (x, y) in enumerate(corners.tolist()):
        out[i, :, :, y : y + side, x : x + side] = window[i].transpose(0, 1).clamp(0, 1)
    return out


def test_mouth_loss_compares_the_decoded_lips_with_the_true_frames(bundle: Path) -> None:
    """Zero when the true frames show what the generated latents decode to around the lips;
    otherwise positive, with a gradient that reaches the generator through the frozen decoder.
    No mouth reader is involved."""
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    window = next(batches(task, 2, seed=0, seconds=window_seconds(task), workers=0))
    data = task.make_batch(window, start_of_stream=False)
    points, truth = task.new_frames(window["points"]), task.new_frames(window["frames"])
    assert points.shape[1] == truth.shape[1] == 4 * MICRO.segment.new_latents
    randomize_(task.model, std=0.2)
    result = lr_a2v_step(task.model, data, t=torch.full((2,), 0.5))
    estimate = result.estimate[:, :, -MICRO.segment.new_latents :]
    with torch.no_grad():
        decoded, corners = task.mouth_windows(data, estimate, points)
    assert torch.equal(
        task.mouth_loss(data, estimate, points, _paste(truth, decoded, corners)), torch.zeros(2)
    )
    mouth = task.mouth_loss(data, estimate, points, truth)
    assert mouth.shape == (2,) and (mouth > 0).all()
    mouth.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    assert all(p.grad is None for p in task.parts.vae.parameters())
    # The same loss on the sample the engine makes: gradients through its last Euler step only.
    task.model.zero_grad()
    sampled = task.mouth_loss(data, task.sample(data, grad=True), points, truth)
    assert sampled.shape == (2,) and (sampled > 0).all()
    sampled.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    assert not task.sample(data, grad=False).requires_grad
    torch.manual_seed(1)
    loss, stats = task.loss(window)
    assert loss.requires_grad and {"flow", "mouth_l1", "mouth_sample_l1"} <= set(stats)
    assert stats["mouth_l1"] > 0 and stats["mouth_sample_l1"] > 0
    # Samples whose audio was dropped cannot know the mouth: they get no mouth term.
    task.model.config = MICRO.replace(dropout=DropoutConfig(audio=1.0))
    assert task.loss(window)[1]["mouth_l1"] == 0.0


def test_mouth_window_decodes_the_lips_as_the_whole_frame_does(tmp_path: Path) -> None:
    """At the tiny preset's grid the decoded window around the lips is a part of the frame: inside
    the margin the mouth term leaves out, its pixels are the whole decoded frame's (within a few
    grey levels: a trained decoder looks a few cells around, the demo bundle's)."""
    demo = load_bundle(DEFAULT_BUNDLE, ("vae", "audio"))
    tiny = demo.config
    save_bundle(tmp_path, tiny, demo.parts)
    task = build_task("lr-a2v", tiny, bundle=tmp_path)
    window = next(batches(task, 1, seed=0, seconds=window_seconds(task), workers=0))
    data = task.make_batch(window, start_of_stream=False)
    points = task.new_frames(window["points"])
    assert min(tiny.lr_latent_grid) > LIP_CROP_CELLS  # a real window, not the whole grid
    noisy = data.target + 0.3 * torch.randn_like(data.target)
    with torch.no_grad():
        windowed, corners = task.mouth_windows(data, noisy, points)
        frames = task.parts.vae.decode(torch.cat([data.prefix, data.motion, noisy], dim=2))
    side, (x, y) = windowed.shape[-1], corners[0].tolist()
    m = LIP_CROP_MARGIN * tiny.time.vae_spatial_stride
    whole = frames[0, :, -points.shape[1] :, y + m : y + side - m, x + m : x + side - m]
    torch.testing.assert_close(windowed[0, :, :, m : side - m, m : side - m], whole, rtol=0, atol=0.03)
