"""Time schedules for sampling (t runs from 0 = noise to 1 = data)."""

from __future__ import annotations

import torch
from torch import Tensor


def time_shift(t: Tensor, shift: float) -> Tensor:
    """Shift flow times toward the noise end by `shift` (SD3's resolution-dependent shift).

    With sigma = 1 - t the noise level, sigma' = shift * sigma / (1 + (shift - 1) * sigma);
    shift 1 is the identity, shift > 1 spends more of a schedule at high noise.
    The end points 0 and 1 are fixed.
    """
    sigma = 1 - t
    return 1 - shift * sigma / (1 + (shift - 1) * sigma)


def sampling_times(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> Tensor:
    """The `steps + 1` times [0, ..., 1] of an Euler schedule with `steps` steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=torch.float64)
    return time_shift(t, shift).float()


def with_sampler_times(
    t: Tensor, steps: int, shift: float, share: float, generator: torch.Generator | None = None
) -> Tensor:
    """Training times t [B] with a `share` of them replaced by the times a `steps`-step sampler
    evaluates (the starts of its Euler steps, drawn uniformly): what the sampler asks is trained
    exactly, the rest of the flow path still by the draws in t."""
    if share <= 0:
        return t
    starts = sampling_times(steps, shift)[:-1]
    pick = torch.randint(len(starts), t.shape, generator=generator)
    at_sampler = torch.rand(t.shape, generator=generator) < share
    return torch.where(at_sampler.to(t.device), starts[pick].to(t.device, t.dtype), t)
