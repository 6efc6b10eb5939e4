"""An exponential moving average of a model's weights, the weights a flow model is sampled with.

A generator's raw weights move with every batch; the samples of one checkpoint
and the next can differ more than the model improved in between (the demo's
lip sync measured 0.60 at one LR-A2V checkpoint and 0.46 a few hundred steps
later). The average over the last ~1 / (1 - decay) steps is a smoother, usually
better model at no training cost; it is what the bundle stores.
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

    def load(self, tensors: dict[str, Tensor]) -> None:
        for key, value in self.shadow.items():
            value.copy_(tensors[key])

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
