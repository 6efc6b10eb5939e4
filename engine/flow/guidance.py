"""Classifier-free guidance over several conditions, each with its own scale.

Conditions are added one at a time in a fixed order c_1 .. c_n (for LR-A2V:
reference, audio, text). With v_i the prediction that keeps c_1 .. c_i and
drops the rest (v_0 drops all),

    v = v_0 + sum_i s_i * (v_i - v_{i-1})

so each scale s_i amplifies what condition c_i adds on top of the earlier
ones. All scales 1 give exactly v_n (the conditional prediction), all scales 0
give v_0 (the unconditional one). Rewritten as a weighted sum
`sum_i w_i v_i` with w_0 = 1 - s_1, w_i = s_i - s_{i+1}, w_n = s_n, only the
predictions with w_i != 0 are evaluated, in one batched forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Guidance:
    """Ordered conditions and their scales."""

    conditions: tuple[str, ...]
    scales: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.conditions) != len(self.scales):
            raise ValueError("one scale per condition")

    def plan(self) -> list[tuple[frozenset[str], float]]:
        """The predictions to evaluate: (conditions dropped, weight), weights != 0."""
        s = (*self.scales, 0.0)
        weights = [1.0 - s[0]] + [s[i] - s[i + 1] for i in range(len(self.conditions))]
        return [(frozenset(self.conditions[i:]), w) for i, w in enumerate(weights) if w != 0.0]


def guided(
    predict: Callable[[Sequence[frozenset[str]]], Sequence[Tensor]], guidance: Guidance | None
) -> Tensor:
    """The guided prediction; `predict(drops)` returns one prediction per set of dropped conditions."""
    if guidance is None:
        return predict([frozenset()])[0]
    plan = guidance.plan()
    predictions = predict([drop for drop, _ in plan])
    out = torch.zeros_like(predictions[0], dtype=torch.float32)
    for (_, weight), pred in zip(plan, predictions, strict=True):
        out = out + weight * pred.float()
    return out.to(predictions[0].dtype)
