"""LR-A2V: the low-resolution audio-to-video DiT.

Input tokens are `[reference prefix (clean) | motion latents from the previous
segment (clean) | new latents (noisy)]`; conditions are the audio windows of the
motion and new frames (their own cross-attention branch) and optional text.
The network predicts the flow velocity of the new latents; the context frames
pass through with flow time 1 and no loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from engine.config import Config
from engine.flow import Guidance, VelocityFn
from engine.models.conditions import SegmentConditions, check_shape, guided_velocity
from engine.models.dit import DiT
from engine.models.text import ByteTextEncoder, TextTokens

CONDITIONS = ("reference", "audio", "text")
"""Droppable conditions, in guidance order."""


@dataclass(frozen=True)
class LRConditions(SegmentConditions):
    """What one LR-A2V segment is conditioned on.

    prefix [B, C, P, h, w]: the reference latent (P = 1: one encoded image).
    motion [B, C, M, h, w]: clean latents from the end of the previous segment (M may be 0).
    audio [B, M + N, A, D]: audio windows of the motion and new frames.
    text: byte tokens (the empty text when there is none).
    """

    DROPPABLE: ClassVar[Mapping[str, str]] = {"reference": "prefix", "audio": "audio", "text": "text"}

    audio: Tensor
    text: TextTokens


class LRA2V(nn.Module):
    """Audio (+ reference, + text) -> low-res latent video velocity."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = ByteTextEncoder(config.text)
        self.dit = DiT(
            config.lr_a2v,
            in_channels=config.latent_channels,
            out_channels=config.latent_channels,
            text_dim=config.text.dim,
            audio_dim=config.audio.feature_dim,
        )

    def _check(self, noisy: Tensor, cond: LRConditions) -> None:
        c = self.config
        B, C, (h, w) = noisy.shape[0], c.latent_channels, c.lr_latent_grid
        for name, x in (("prefix", cond.prefix), ("motion", cond.motion), ("noisy", noisy)):
            check_shape(f"LR-A2V {name} latents", x, [B, C, None, h, w])
        frames = cond.motion.shape[2] + noisy.shape[2]
        audio = [B, frames, c.audio_tokens_per_latent, c.audio.feature_dim]
        check_shape("LR-A2V audio windows (motion + new frames)", cond.audio, audio)

    def forward(self, noisy: Tensor, t: Tensor, cond: LRConditions, *, all_frames: bool = False) -> Tensor:
        """Velocity of the new latents.

        noisy [B, C, N, h, w]: the new latents on the flow path at time t [B].
        The sequence the DiT sees is [cond.prefix | cond.motion | noisy] with flow
        time 1 on the clean context. Returns [B, C, N, h, w], or [B, C, P+M+N, h, w]
        with all_frames (training, where the context frames carry loss weight 0).
        """
        self._check(noisy, cond)
        layout = cond.layout(noisy.shape[2])
        x = torch.cat([cond.prefix, cond.motion, noisy], dim=2)  # [B, C, P+M+N, h, w]
        return self.dit(
            x,
            layout.frame_times(t),
            layout,
            text=self.text_encoder(cond.text),
            text_lens=cond.text.lens,
            audio=cond.audio,
            out_frames=None if all_frames else layout.new,
        )

    def velocity(self, cond: LRConditions, guidance: Guidance | None = None) -> VelocityFn:
        """The sampler's velocity function for the new frames of one segment."""
        return guided_velocity(self, cond, guidance)

    def guidance(self) -> Guidance:
        """The configured per-condition guidance scales."""
        f = self.config.flow
        return Guidance(CONDITIONS, (f.guidance_reference, f.guidance_audio, f.guidance_text))
