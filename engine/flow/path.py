"""The rectified-flow path `z_t = (1 - t) * eps + t * z1` (t = 0 noise, t = 1 data) and its loss.

The generators predict the clean latents x (x-prediction), not the velocity: on this path the
velocity at z_t that leads to an estimate x_hat is `(x_hat - z_t) / (1 - t)`
(`velocity_from_estimate`), so the sampler and the loss keep speaking velocities while the network
speaks pictures. A velocity-predicting network must output noise-sized values at every step; an
x-predicting one outputs a picture, which lets it start from a picture (the reference) and learn
only what changes ("Back to Basics: Let Denoising Generative Models Denoise", Li & He 2025).
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.flow.schedule import time_shift
from engine.randomness import randn


def _per_frame(t: Tensor) -> Tensor:
    """[B, F] -> [B, 1, F, 1, 1], to broadcast over [B, C, F, H, W] latents."""
    return t[:, None, :, None, None]


def noise_frames(z1: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """Points on the path for latents z1 [B, C, F, H, W] at per-frame times t [B, F].

    Frames with t == 1 are clean context (reference prefix, motion frames): they
    are returned bit-identical, not recomputed as `0 * eps + 1 * z1`.
    """
    tf = _per_frame(t).to(z1.dtype)
    z_t = (1 - tf) * eps + tf * z1
    return torch.where(_per_frame(t) >= 1, z1, z_t)


MIN_REMAINING_TIME = 0.05  # 1 - t is clamped here: x-prediction's velocity divides by it


def velocity_from_estimate(estimate: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
    """The velocity at z_t [B, C, F, H, W] that reaches the clean `estimate` at t = 1:
    `(estimate - z_t) / (1 - t)`, t [B] or per frame [B, F]; 1 - t is clamped to
    MIN_REMAINING_TIME (Li & He's clip), so clean context frames (t = 1) give a finite 0.

    With the true x as `estimate` this is the path's velocity `x - eps` wherever 1 - t is above the
    clamp, and a velocity loss between two such velocities is an x-loss weighted by 1 / (1 - t)^2.
    One Euler step from t to 1 lands exactly on the estimate.
    """
    tf = _per_frame(t if t.dim() == 2 else t[:, None]).to(torch.float32)
    remaining = (1 - tf).clamp_min(MIN_REMAINING_TIME)
    return ((estimate.float() - z_t.float()) / remaining).to(estimate.dtype)


def flow_matching_loss(
    pred: Tensor, target: Tensor, frame_weight: Tensor, spatial_weight: Tensor | None = None
) -> Tensor:
    """Weighted mean squared error of velocities (or of clean estimates: FlowConfig.refiner_loss).

    pred/target [B, C, F, H, W]; frame_weight [F] or [B, F] (w_i; 0 for prefix and
    motion frames). Each frame's error is averaged over (C, H, W) — weighted by
    spatial_weight [B, 1, 1 or F, H, W] when given — then averaged over frames with
    these weights, so a weight-0 frame cannot change the loss.
    """
    error = (pred.float() - target.float()).pow(2)
    if spatial_weight is None:
        per_frame = error.mean(dim=(1, 3, 4))  # [B, F]
    else:
        w = spatial_weight.float().expand_as(error)
        per_frame = (error * w).mean(dim=(1, 3, 4)) / w.mean(dim=(1, 3, 4))
    w = frame_weight.to(per_frame).expand_as(per_frame)
    # Select rather than multiply: a weight-0 frame must not leak in even if its error is inf/nan.
    weighted = torch.where(w > 0, per_frame * w, torch.zeros_like(per_frame))
    return weighted.sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def sample_training_time(
    batch: int,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Flow times [B] for training: logit-normal, then the sampler's time shift.

    Shifting the training distribution like the sampling schedule puts the
    training signal where the sampler spends its steps.
    """
    u = randn((batch,), generator=generator, device=device) * std + mean
    return time_shift(torch.sigmoid(u), shift)
