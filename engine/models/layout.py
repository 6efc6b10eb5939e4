"""Which latent frames of a generator's input are clean context and which are generated.

A generator sees one sequence of latent frames, `[prefix | motion | new]`:
the reference prefix (one encoded image, never noised), motion frames carried
over from the previous segment (clean), and the new frames being denoised.
Each frame carries its own flow time (1 = clean), so clean context is told
apart from noise by the time embedding, and the loss weights context by 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.exceptions import InputShapeError


@dataclass(frozen=True)
class SegmentLayout:
    """Frame counts of the three parts of a generator's input sequence."""

    prefix: int  # reference prefix latent frames (clean, never in the loss)
    motion: int  # clean frames carried over from the previous segment (never in the loss)
    new: int  # noisy frames to generate

    def __post_init__(self) -> None:
        if self.prefix < 0 or self.motion < 0 or self.new < 1:
            raise InputShapeError(f"invalid segment layout {self}: need prefix, motion >= 0 and new >= 1")

    @property
    def frames(self) -> int:
        return self.prefix + self.motion + self.new

    @property
    def context(self) -> int:
        """Clean frames in front of the new ones."""
        return self.prefix + self.motion

    @property
    def groups(self) -> tuple[int, ...]:
        """Non-empty frame groups in order, for the block-causal attention mask."""
        return tuple(n for n in (self.prefix, self.motion, self.new) if n > 0)

    def frame_times(self, t_new: Tensor) -> Tensor:
        """Per-frame flow time [B, F]: 1 for the clean context, `t_new` [B] for the new frames."""
        context = torch.ones(t_new.shape[0], self.context, device=t_new.device, dtype=t_new.dtype)
        return torch.cat([context, t_new[:, None].expand(-1, self.new)], dim=1)

    def loss_weights(self, device: torch.device | str = "cpu") -> Tensor:
        """Per-frame loss weight [F]: 0 for prefix and motion frames, 1 for new frames."""
        w = torch.zeros(self.frames, device=device)
        w[self.context :] = 1.0
        return w

    def check(self, x: Tensor, name: str = "latents") -> None:
        """Raise if x [B, C, F, H, W] does not have this layout's frame count."""
        if x.dim() != 5 or x.shape[2] != self.frames:
            raise InputShapeError(
                f"{name}: expected [B, C, {self.frames}, H, W] for layout {self}, got {list(x.shape)}"
            )
