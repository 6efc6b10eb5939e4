"""The Euler sampler: integrate `dz/dt = v(z, t)` from noise (t = 0) to data (t = 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""v(z [B, ...], t [B]) -> velocity shaped like z."""


def averaged_draws(steps: int, draws: int) -> int:
    """Noise draws a sample of `steps` Euler steps averages: `draws` for one step, else 1. (From
    t = 0 one step aims at the conditional mean, which averaging estimates better; a multi-step
    sample is a draw of the distribution, which averaging would blur.)"""
    return draws if steps == 1 else 1


@torch.no_grad()
def euler_sample(velocity: VelocityFn, noise: Tensor, times: Tensor) -> Tensor:
    """Integrate from `noise` along `times` [k + 1] (from sampling_times); k = 1 is one step."""
    z = noise
    for t0, t1 in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        t = torch.full((z.shape[0],), t0, device=z.device, dtype=torch.float32)
        z = z + (t1 - t0) * velocity(z, t).to(z.dtype)
    return z
