"""Latent frames that join: the step between one latent frame's video and the next spread over
the next one's frames.

The decoder unfolds each latent frame into `stride` video frames that barely move among
themselves, so what the generator changes from one latent frame to the next shows as one step every
`stride` frames (6.25 Hz at 25 fps; `ihuman eval fidelity` measures the frame change at latent
boundaries against inside latent frames). Each latent frame's video here starts from where the last
one ended and reaches its own frames by its last: frame p of it takes
`(1 - (p + 1) / stride) x (the last frame shown - its first frame)` on top of itself. Nothing
waits for the next latent frame (no added latency); a latent frame's last video frame is exactly
the decoder's, so the stream never drifts from it; where nothing changed between them, nothing does.
The cost: a change reaches its full size over `stride` frames, on average (stride - 1) / 2 frames
after the decoder shows it.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LatentJoins:
    """For one stream at one resolution: remembers the last frame shown."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.last: Tensor | None = None

    def apply(self, frames: Tensor) -> Tensor:
        """frames float [T, 3, H, W], the stream's next frames, T a whole number of latent frames
        -> the same with each latent frame's start joined to the frame shown before it."""
        T = frames.shape[0]
        if T % self.stride:
            raise ValueError(f"{T} frames are not whole latent frames of {self.stride}")
        out = frames.clone()
        ramp = 1 - (torch.arange(1, self.stride + 1, device=frames.device, dtype=frames.dtype) / self.stride)
        for start in range(0, T, self.stride):
            if self.last is not None:
                step = self.last - frames[start]
                out[start : start + self.stride] += ramp[:, None, None, None] * step
            self.last = out[start + self.stride - 1].clone()
        return out
