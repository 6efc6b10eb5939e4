"""One training step's loss for each generator: noised inputs, masks, dropout and loss.

Both follow the streaming layout: the sequence is `[prefix | motion | new]`,
the whole window is put on the flow path with per-frame time (1 for the clean
prefix and motion frames, so they come out bit-identical), and the loss weights
the prefix and motion frames by 0. The models estimate clean latents; the loss compares the
velocity of that estimate with the velocity of the true latents on the same path
(engine.flow.velocity_from_estimate), flow matching's velocity loss as Li & He train x-prediction,
or the estimates themselves (FlowConfig.lr_loss / refiner_loss, and why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.config import DegradationConfig, FlowConfig, FlowTraining
from engine.flow import (
    flow_matching_loss,
    noise_frames,
    sample_training_time,
    velocity_from_estimate,
    with_sampler_times,
)
from engine.models.conditions import SegmentConditions
from engine.models.degradation import degrade_latent, sample_degradation
from engine.models.lr_a2v import LRA2V, LRConditions
from engine.models.refiner import PGRefiner, RefinerConditions
from engine.models.text import TextTokens
from engine.randomness import randn
from engine.training.conditioning import lr_a2v_rates, refiner_rates, sample_keep


@dataclass(frozen=True)
class LRA2VBatch:
    """Clean training data for LR-A2V (latents from the video autoencoder)."""

    prefix: Tensor  # [B, C, 1, h, w] reference latent
    motion: Tensor  # [B, C, M, h, w] latents before the segment
    target: Tensor  # [B, C, N, h, w] latents of the segment to generate
    audio: Tensor  # [B, M + N, A, D] audio windows of motion and new frames
    text: TextTokens
    still: Tensor  # [B, C, 1, h, w] the reference as a still video's latent (the estimate's start)
    weight: Tensor | None = None  # [B, 1, 1, h, w] loss weight per latent cell (e.g. the mouth's)


@dataclass(frozen=True)
class RefinerBatch:
    """Clean training data for the PG-Refiner."""

    prefix: Tensor  # [B, C, 1, H, W] reference latent at HR
    motion: Tensor  # [B, C, M, H, W] HR latents before the chunk
    target: Tensor  # [B, C, N, H, W] HR latents to generate
    lr: Tensor  # [B, C, N, h, w] LR latents of the same frames (start of the estimate; degraded: a condition)
    pose: Tensor  # [B, 8, s*N, Hp, Wp] pose tensor of the chunk's video frames
    text: TextTokens


@dataclass(frozen=True)
class StepResult:
    loss: Tensor  # scalar
    t: Tensor  # [B] flow time of the new frames
    noised: Tensor  # [B, C, P+M+N, H, W] the whole window on the flow path
    estimate: Tensor  # [B, C, P+M+N, H, W] the model's clean estimate of it
    keep: Mapping[str, Tensor]  # per-condition keep masks [B] after dropout


def _flow_step(
    model: LRA2V | PGRefiner,
    cond: SegmentConditions,
    target: Tensor,
    keep: Mapping[str, Tensor],
    settings: FlowTraining,
    flow: FlowConfig,
    generator: torch.Generator | None,
    noise: Tensor | None,
    t: Tensor | None,
    spatial_weight: Tensor | None = None,
) -> StepResult:
    """settings: the generator's shift, loss space, and the share of drawn times that become its
    sampler's own."""
    shift = settings.shift
    layout = cond.layout(target.shape[2])
    z1 = torch.cat([cond.prefix, cond.motion, target], dim=2)  # [B, C, P+M+N, H, W]
    if noise is None:
        noise = randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
    # Noise for the context frames is drawn too but never used: their flow time is 1.
    eps = torch.cat([torch.zeros_like(z1[:, :, : layout.context]), noise], dim=2)
    if t is None:
        t = sample_training_time(
            target.shape[0],
            mean=flow.train_time_mean,
            std=flow.train_time_std,
            shift=shift,
            generator=generator,
            device=target.device,
        )
        t = with_sampler_times(t, settings.sampler_steps, shift, settings.sampler_share, generator)
    times = layout.frame_times(t)
    z_t = noise_frames(z1, eps, times)
    estimate = model(z_t[:, :, layout.context :], t, cond, all_frames=True)  # [B, C, P+M+N, H, W]
    if settings.loss_space == "velocity":
        pred, true = velocity_from_estimate(estimate, z_t, times), velocity_from_estimate(z1, z_t, times)
    else:
        pred, true = estimate, z1
    loss = flow_matching_loss(pred, true, layout.loss_weights(target.device), spatial_weight)
    return StepResult(loss=loss, t=t, noised=z_t, estimate=estimate, keep=keep)


def lr_conditions(batch: LRA2VBatch) -> LRConditions:
    """The batch's conditions, all kept."""
    return LRConditions(
        prefix=batch.prefix, motion=batch.motion, audio=batch.audio, text=batch.text, still=batch.still
    )


def lr_a2v_step(
    model: LRA2V,
    batch: LRA2VBatch,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    t: Tensor | None = None,
) -> StepResult:
    """Flow-matching loss of LR-A2V on one batch, with multimodal dropout (text/audio/reference).

    noise [B, C, N, h, w] and t [B] may be fixed (tests, overfitting); by default they are drawn.
    """
    cfg = model.config
    keep = sample_keep(batch.target.shape[0], lr_a2v_rates(cfg.dropout), generator, batch.target.device)
    cond = lr_conditions(batch).drop(keep)
    f = cfg.flow
    return _flow_step(model, cond, batch.target, keep, f.training("lr"), f, generator, noise, t, batch.weight)


def degraded_conditions(
    batch: RefinerBatch, degradation: DegradationConfig, generator: torch.Generator | None
) -> RefinerConditions:
    """The batch's refiner conditions, all kept, with the LR latent degraded by per-sample
    strengths (LPF + noise) as a condition; the estimate still starts from the clean one."""
    B = batch.target.shape[0]
    sigma, noise_level = sample_degradation(B, degradation, generator, str(batch.target.device))
    return RefinerConditions(
        prefix=batch.prefix,
        motion=batch.motion,
        lr=degrade_latent(batch.lr, sigma, noise_level, generator),
        pose=batch.pose,
        text=batch.text,
        lr_clean=batch.lr,
    )


def refiner_step(
    model: PGRefiner,
    batch: RefinerBatch,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    t: Tensor | None = None,
) -> StepResult:
    """Flow-matching loss of the PG-Refiner on one batch.

    The LR latent is degraded with per-sample strengths (LPF + noise), then
    reference, pose, LR and text are dropped with their rates.
    """
    cfg = model.config
    cond = degraded_conditions(batch, cfg.degradation, generator)
    keep = sample_keep(batch.target.shape[0], refiner_rates(cfg.dropout), generator, batch.target.device)
    cond = cond.drop(keep)
    f = cfg.flow
    return _flow_step(model, cond, batch.target, keep, f.training("refiner"), f, generator, noise, t)
