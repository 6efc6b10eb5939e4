"""The Euler sampler: integrate `dz/dt = v(z, t)` from noise (t = 0) to data (t = 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""v(z [B, ...], t [B]) -> velocity shaped like z."""


@torch.no_grad()
def euler_sample(velocity: VelocityFn, noise: Tensor, times: Tensor) -> Tensor:
    """Integrate from `noise` along `times` [k + 1] (from sampling_times); k = 1 is one step."""
    z = noise
    for t0, t1 in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        t = torch.full((z.shape[0],), t0, device=z.device, dtype=torch.float32)
        z = z + (t1 - t0) * velocity(z, t).to(z.dtype)
    return z
