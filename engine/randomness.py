"""Random draws that a seeded generator reproduces on any device.

A `torch.Generator` lives on one device, and torch refuses to draw on another
with it. The held-out evaluations seed CPU generators so that their numbers
compare across runs and machines; with these helpers the same seed gives the
same noise whether the model runs on the CPU or on a GPU: the numbers are drawn
where the generator lives, then moved to the tensors' device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _draw(
    fn: Callable[..., Tensor],
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> Tensor:
    where = generator.device if generator is not None else torch.device(device)
    return fn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def rand(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform [0, 1) numbers of `shape` on `device`, drawn with `generator` wherever it lives."""
    return _draw(torch.rand, shape, generator, device, dtype)


def randn(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal numbers of `shape` on `device`, drawn with `generator` wherever it lives."""
    return _draw(torch.randn, shape, generator, device, dtype)
