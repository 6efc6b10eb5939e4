"""Both tiny generators overfit one fixed batch, and the sampler then reproduces its target.

With a fixed (target, noise) pair the flow path is one straight line whose
velocity is the constant `target - noise`; a model that has learned it brings
the Euler sampler from that noise to the target with any number of steps.
"""

import dataclasses
from collections.abc import Callable

import torch

from engine.config import DropoutConfig, get_preset
from engine.flow import euler_sample, sampling_times
from engine.models.degradation import degrade_latent, inference_degradation
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.training.steps import StepResult, lr_a2v_step, refiner_step
from tests.factories import lr_batch, lr_conditions, refiner_batch, refiner_conditions

# A step budget, not a time budget: a test that must finish in so many seconds fails on a loaded
# machine. They need 197 (LR-A2V) and 433 (refiner) steps, 16 s and 88 s on one busy core.
MAX_STEPS = 1000
# Relative L2 error of the sampled latents vs the target: one step relies on the velocity at
# pure noise alone, more steps average their errors out.
TOLERANCE = {1: 0.2, 2: 0.1, 4: 0.1}


def _overfit(
    model: torch.nn.Module, step: Callable[[torch.Generator], StepResult], target_drop: float
) -> tuple[float, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    first = last = None
    recent: list[float] = []
    for _ in range(MAX_STEPS):
        loss = step(generator).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        recent = [*recent[-9:], loss.item()]
        last = sum(recent) / len(recent)  # mean of the last 10 steps: t is random each step
        if len(recent) == 10 and last < first / target_drop:
            break
    assert first is not None and last is not None
    return first, last


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_lr_a2v_overfits_and_reproduces_target() -> None:
    c = get_preset("tiny").replace(dropout=DropoutConfig(0, 0, 0, 0, 0))
    model = LRA2V(c)
    b = lr_batch(c, batch=1)
    noise = torch.randn_like(b.target)
    first, last = _overfit(model, lambda g: lr_a2v_step(model, b, generator=g, noise=noise), 300.0)
    assert last <= first / 10, (first, last)
    for k in (1, 2, 4):
        sample = euler_sample(
            model.velocity(lr_conditions(b)), noise, sampling_times(k, c.flow.lr_time_shift)
        )
        assert _relative_error(sample, b.target) < TOLERANCE[k], k


def test_refiner_overfits_and_reproduces_target_in_one_step() -> None:
    c = get_preset("tiny").replace(dropout=DropoutConfig(0, 0, 0, 0, 0))
    model = PGRefiner(c)
    b = refiner_batch(c, batch=1)
    noise = torch.randn_like(b.target)
    first, last = _overfit(model, lambda g: refiner_step(model, b, generator=g, noise=noise), 300.0)
    assert last <= first / 10, (first, last)
    # Inference degrades the LR latent as training did, with the config's fixed strengths.
    degraded = degrade_latent(b.lr, *inference_degradation(1, c.degradation))
    cond = dataclasses.replace(refiner_conditions(b), lr=degraded)
    for k in (1, 2, 4):
        times = sampling_times(k, c.flow.refiner_time_shift)
        sample = euler_sample(model.velocity(cond), noise, times)
        assert _relative_error(sample, b.target) < TOLERANCE[k], k
