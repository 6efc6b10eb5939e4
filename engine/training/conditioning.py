"""Training-side conditioning: multimodal dropout with the rates of the config.

Each sample drops each condition independently with its rate; a dropped
condition takes the null value defined with the model's conditions
(engine.models.conditions), the same one classifier-free guidance uses.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from engine.config import DropoutConfig
from engine.randomness import rand


def lr_a2v_rates(cfg: DropoutConfig) -> dict[str, float]:
    return {"reference": cfg.reference, "audio": cfg.audio, "text": cfg.text}


def refiner_rates(cfg: DropoutConfig) -> dict[str, float]:
    return {"reference": cfg.reference, "pose": cfg.pose, "lr": cfg.lr, "text": cfg.text}


def sample_keep(
    batch: int,
    rates: Mapping[str, float],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Per-condition keep masks [B]: False with probability `rates[name]`."""
    return {name: rand((batch,), generator=generator, device=device) >= rate for name, rate in rates.items()}
