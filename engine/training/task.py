"""The base of every `ihuman train` task: the part it trains, its batches' window, loss and evaluation."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.data.dataset import WindowSpec


@dataclass
class Task(abc.ABC):
    name: str
    part: str  # the bundle part it trains
    model: nn.Module
    extra: dict[str, nn.Module]  # task-only heads saved beside the bundle
    spec: WindowSpec

    @abc.abstractmethod
    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """Training loss of one batch and stats to log."""

    @abc.abstractmethod
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        """Metrics on held-out batches."""

    def frozen(self) -> list[nn.Module]:
        """The modules the task reads but does not train (they follow the model's device)."""
        return []

    def to(self, device: torch.device) -> Task:
        """The trained model, its heads and the frozen modules the task reads, on `device`."""
        for module in (self.model, *self.extra.values(), *self.frozen()):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def stream(self, seeds: Sequence[int], batch: int, workers: int) -> Iterable[dict] | None:
        """Batches from the characters `seeds`, for tasks whose data are not video windows
        (None: the windows of `spec`, from disk or made on the fly)."""
        return None
