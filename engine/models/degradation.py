"""The LR-latent degradation `z_deglr = LPF(z_lr) + a_deg * eps` (docs/design.md, PG-Refiner (a)).

The refiner must not copy the low-res latent's artifacts, only its layout and
motion: it is trained on LR latents blurred by a Gaussian low-pass filter and
noised, with both strengths sampled per sample, and at inference the same
degradation is applied with fixed strengths so the condition looks like what
training showed. It lives beside the models, not in training/, because the
inference path applies it too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import DegradationConfig
from engine.randomness import rand, randn


def gaussian_blur(z: Tensor, sigma: Tensor, radius_sigmas: float = 3.0) -> Tensor:
    """Blur each sample's latent frames spatially: z [B, C, F, H, W], sigma [B] in latent cells.

    Separable Gaussian with reflect padding; sigma 0 leaves the sample unchanged.
    """
    B, C, frames, H, W = z.shape
    sigma = sigma.to(torch.float32).clamp_min(0)
    radius = max(1, math.ceil(radius_sigmas * float(sigma.max())))
    radius = min(radius, H - 1, W - 1)
    offsets = torch.arange(-radius, radius + 1, device=z.device, dtype=torch.float32)
    safe = sigma.clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None, :] == 0).float())  # delta for sigma 0
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, K]
    # One kernel per (sample, channel, frame) image, applied as a grouped convolution.
    kernel = kernel.repeat_interleave(C * frames, dim=0).to(z.dtype)  # [B*C*F, K]
    images = z.reshape(1, B * C * frames, H, W)
    images = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    images = F.conv2d(images, kernel[:, None, None, :], groups=B * C * frames)  # along W
    images = F.conv2d(images, kernel[:, None, :, None], groups=B * C * frames)  # along H
    return images.view(B, C, frames, H, W)


def degrade_latent(
    z_lr: Tensor, sigma: Tensor, noise_level: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """`LPF_sigma(z_lr) + a_deg * eps` for z_lr [B, C, F, h, w] and per-sample sigma, a_deg [B]."""
    eps = randn(z_lr.shape, generator=generator, device=z_lr.device, dtype=z_lr.dtype)
    return gaussian_blur(z_lr, sigma) + noise_level.view(-1, 1, 1, 1, 1).to(z_lr.dtype) * eps


def sample_degradation(
    batch: int, cfg: DegradationConfig, generator: torch.Generator | None = None, device: str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Training: per-sample (sigma, a_deg) drawn uniformly from [0, max]."""
    u = rand((2, batch), generator=generator, device=device)
    return u[0] * cfg.blur_sigma_max, u[1] * cfg.noise_max


def inference_degradation(batch: int, cfg: DegradationConfig, device: str = "cpu") -> tuple[Tensor, Tensor]:
    """Inference: the fixed (sigma, a_deg) of the config for every sample."""
    sigma = torch.full((batch,), cfg.inference_blur_sigma, device=device)
    return sigma, torch.full((batch,), cfg.inference_noise, device=device)
