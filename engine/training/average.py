"""An exponential moving average of a model's weights, which a flow model is often sampled with.

A generator's raw weights move with every batch, and its samples with them:
the demo's lip sync read 0.64, 0.63, 0.69, 0.72, 0.69 and 0.62 at successive
checkpoints of one LR-A2V run. The average over the last ~1 / (1 - decay)
steps smooths that at no training cost (standard for diffusion and flow
models); `ihuman train --average DECAY` stores it in the bundle. Measured on
the demo's LR-A2V: no gain at a low learning rate (1e-4 -> 6e-5: r = 0.58
averaged and raw), a small one at 2e-4 with decay 0.99 (0.756 against 0.745
raw, 12 held-out characters).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

WARMUP_STEPS = 10  # the decay ramps up as (1 + step) / (10 + step): early averages forget the start


class WeightAverage:
    """EMA of a module's floating-point parameters and buffers (other buffers follow the module)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an average's decay is in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in _floats(module)}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (WARMUP_STEPS + step))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Fold the module's weights after optimizer step `step` (0-based) into the average."""
        weight = 1.0 - self.decay_at(step)
        for key, value in _floats(module):
            self.shadow[key].lerp_(value.detach().float(), weight)

    def state_dict(self, module: nn.Module) -> dict[str, Tensor]:
        """The module's state with the averaged values (what a bundle stores)."""
        return {
            k: (self.shadow[k].to(v.dtype) if k in self.shadow else v).detach().contiguous()
            for k, v in module.state_dict().items()
        }

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """The module with the averaged weights inside the block, its own weights again after."""
        own = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.state_dict(module))
        try:
            yield module
        finally:
            module.load_state_dict(own)


def _floats(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    return ((k, v) for k, v in module.state_dict().items() if v.is_floating_point())
