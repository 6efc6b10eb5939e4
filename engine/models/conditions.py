"""Conditions of a segment generator, their null values, and the guided velocity function.

A generator's conditions are a frozen dataclass of batch-first tensors and text
tokens. Dropping a condition (training dropout, or the unconditional branches
of classifier-free guidance) replaces it by its null value: zeros for tensors,
the empty text for text. Training and guidance share this one definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Self

import torch
from torch import Tensor

from engine.exceptions import InputShapeError
from engine.flow import Guidance, VelocityFn, guided, velocity_from_estimate
from engine.models.layout import SegmentLayout
from engine.models.text import TextTokens


def check_shape(name: str, x: Tensor, expected: Sequence[int | None]) -> None:
    """Raise InputShapeError unless x has the expected shape (None = any size on that axis)."""
    shape = list(x.shape)
    if len(shape) != len(expected) or any(
        e is not None and e != s for e, s in zip(expected, shape, strict=False)
    ):
        want = ", ".join("*" if e is None else str(e) for e in expected)
        raise InputShapeError(f"{name}: expected [{want}], got {shape}")


def keep_rows(x: Tensor, keep: Tensor) -> Tensor:
    """Zero the batch rows of x where keep [B] is False."""
    return x * keep.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


@dataclasses.dataclass(frozen=True)
class SegmentConditions:
    """Base of LRConditions and RefinerConditions: `prefix` and `motion` latents plus more.

    DROPPABLE maps each droppable condition's name to the field that holds it.
    """

    DROPPABLE: ClassVar[Mapping[str, str]] = {}

    prefix: Tensor
    motion: Tensor

    @property
    def batch(self) -> int:
        return self.prefix.shape[0]

    def layout(self, new: int) -> SegmentLayout:
        return SegmentLayout(self.prefix.shape[2], self.motion.shape[2], new)

    def drop(self, keep: Mapping[str, Tensor]) -> Self:
        """Replace the conditions whose keep mask [B] is False by their null value."""
        changes: dict[str, object] = {}
        for name, mask in keep.items():
            attr = self.DROPPABLE[name]
            value = getattr(self, attr)
            changes[attr] = value.drop(mask) if isinstance(value, TextTokens) else keep_rows(value, mask)
        return dataclasses.replace(self, **changes)

    def drop_all(self, dropped: frozenset[str]) -> Self:
        """Drop the named conditions for the whole batch."""
        off = torch.zeros(self.batch, dtype=torch.bool, device=self.prefix.device)
        return self.drop(dict.fromkeys(dropped, off))

    @classmethod
    def cat(cls, parts: Sequence[Self]) -> Self:
        """Concatenate along the batch axis."""
        values = {}
        for field in dataclasses.fields(cls):
            items = [getattr(p, field.name) for p in parts]
            values[field.name] = (
                TextTokens.cat(items) if isinstance(items[0], TextTokens) else torch.cat(items)
            )
        return cls(**values)


def guided_velocity(
    model: Callable[[Tensor, Tensor, SegmentConditions], Tensor],
    cond: SegmentConditions,
    guidance: Guidance | None,
) -> VelocityFn:
    """The sampler's velocity function v(z, t) for the new frames of one segment, from a model
    that estimates the clean latents (x-prediction).

    With guidance, the estimates it needs (engine.flow.guidance) run as one batched forward with
    the dropped conditions replaced by their null values. Guiding estimates or velocities is the
    same: at one z and t the velocity is affine in the estimate, and the weights sum to 1.
    """

    batches: dict[
        tuple[frozenset[str], ...], SegmentConditions
    ] = {}  # one object per plan: see LRA2V.velocity

    def v(z: Tensor, t: Tensor) -> Tensor:  # z [B, C, N, H, W], t [B]
        def predict(drops: Sequence[frozenset[str]]) -> list[Tensor]:
            n, key = len(drops), tuple(drops)
            if key not in batches:
                batches[key] = type(cond).cat([cond.drop_all(d) for d in drops])
            return list(model(z.repeat(n, 1, 1, 1, 1), t.repeat(n), batches[key]).chunk(n))

        return velocity_from_estimate(guided(predict, guidance), z, t)

    return v
