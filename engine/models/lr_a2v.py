"""LR-A2V: the low-resolution audio-to-video DiT.

Input tokens are `[reference prefix (clean) | motion latents from the previous
segment (clean) | new latents (noisy)]`; conditions are the audio windows of the
motion and new frames (their own cross-attention branch) and optional text.
The context frames pass through with flow time 1 and no loss.

The network estimates the clean new latents as **the reference held still plus what it adds**:
`x_hat = still + DiT(...)`, where `still` is the reference's latent as a frame of a still video
(VideoAutoencoder.still_latent); the sampler's velocity follows from the estimate on the flow
path (engine.flow.velocity_from_estimate). Why: a velocity-predicting DiT must output noise-sized
values and builds the picture from nothing, and a small one trained on a CPU streamed coloured
noise. With the skip and adaLN-zero (the DiT's output layer starts at zero) a fresh model streams
the reference, still, from any noise and with any number of steps, and training only has to add
motion: the mouth, the head, the hands. From t = 0 one Euler step lands on the estimate itself,
so a one-step sample carries no noise (the averaged noise draws of the velocity model are gone).

Each new frame's tokens also get the reference and the last context frame (the previous
segment's last latent, or the reference at the start) added through a linear map of their patches
(`context_tokens`), as image-to-video DiTs concatenate their conditioning latents. Why: in the
sequence alone the context reaches a new token only through attention, and a small DiT learnt
from it far more slowly than from the same latents on the token itself (docs/demo.md measures
both). The map starts at zero, so a fresh model still streams the still reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from engine.config import Config
from engine.exceptions import InputShapeError
from engine.flow import Guidance, VelocityFn
from engine.models.conditions import SegmentConditions, check_shape, guided_velocity
from engine.models.dit import ContextKV, DiT, patchify
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
    still [B, C, 1, h, w]: the reference as a still video's latent frame, where the estimate of
    every new frame starts. Not a condition the network reads: it is never dropped, so
    guidance, which differences estimates, never scales it.
    """

    DROPPABLE: ClassVar[Mapping[str, str]] = {"reference": "prefix", "audio": "audio", "text": "text"}

    audio: Tensor
    text: TextTokens
    still: Tensor


class LRA2V(nn.Module):
    """Audio (+ reference, + text) -> low-res latent video, estimated from the still reference."""

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
        self.context_embed: nn.Linear | None = None
        if config.segment.lr_context_tokens:
            patch_values = config.latent_channels * config.lr_a2v.patch_volume
            self.context_embed = nn.Linear(2 * patch_values, config.lr_a2v.width)
            nn.init.zeros_(self.context_embed.weight)
            nn.init.zeros_(self.context_embed.bias)

    def _check(self, noisy: Tensor, cond: LRConditions) -> None:
        c = self.config
        B, C, (h, w) = noisy.shape[0], c.latent_channels, c.lr_latent_grid
        for name, x in (("prefix", cond.prefix), ("motion", cond.motion), ("noisy", noisy)):
            check_shape(f"LR-A2V {name} latents", x, [B, C, None, h, w])
        check_shape("LR-A2V still reference latent", cond.still, [B, C, 1, h, w])
        frames = cond.motion.shape[2] + noisy.shape[2]
        audio = [B, frames, c.audio_tokens_per_latent, c.audio.feature_dim]
        check_shape("LR-A2V audio windows (motion + new frames)", cond.audio, audio)

    def context_tokens(self, cond: LRConditions, new: int) -> Tensor | None:
        """[B, new * tokens, width]: the reference and the last context frame, patch by patch, for
        each of the `new` frames' tokens (a dropped reference is zeros here too); None when the
        config has none (SegmentConfig.lr_context_tokens)."""
        if self.context_embed is None:
            return None
        last = cond.motion[:, :, -1:] if cond.motion.shape[2] else cond.prefix[:, :, -1:]
        pair = torch.cat([cond.prefix[:, :, -1:], last], dim=1)  # [B, 2C, 1, h, w]
        patches = patchify(pair.expand(-1, -1, new, -1, -1), self.config.lr_a2v.patch)
        return self.context_embed(patches)

    def forward(
        self,
        noisy: Tensor,
        t: Tensor,
        cond: LRConditions,
        *,
        all_frames: bool = False,
        context: ContextKV | None = None,
    ) -> Tensor:
        """The clean estimate of the new latents: `cond.still` plus the DiT's output.

        noisy [B, C, N, h, w]: the new latents on the flow path at time t [B].
        The sequence the DiT sees is [cond.prefix | cond.motion | noisy] with flow
        time 1 on the clean context. Returns [B, C, N, h, w], or [B, C, P+M+N, h, w]
        with all_frames (training, where the context frames -- their own latents plus
        the output -- carry loss weight 0). context: `context_kv(cond)`, so that only the new
        frames are computed (the same estimate; not with all_frames).
        """
        self._check(noisy, cond)
        layout = cond.layout(noisy.shape[2])
        if context is not None and all_frames:
            raise InputShapeError("all_frames needs the whole sequence, not a cached context")
        text = self.text_encoder(cond.text)
        if context is None:
            x, times = torch.cat([cond.prefix, cond.motion, noisy], dim=2), layout.frame_times(t)
        else:
            x, times = noisy, t[:, None].expand(-1, layout.new)
        residual = self.dit(
            x,  # [B, C, P+M+N, h, w], or the N new frames after a cached context
            times,
            layout,
            text=text,
            text_lens=cond.text.lens,
            audio=cond.audio,
            token_cond=self.context_tokens(cond, layout.new),
            out_frames=None if all_frames else layout.new,
            context=context,
        )
        base = cond.still.expand(-1, -1, layout.new, -1, -1)  # [B, C, N, h, w]
        if all_frames:
            base = torch.cat([cond.prefix, cond.motion, base], dim=2)
        return base + residual

    def context_kv(self, cond: LRConditions, new: int) -> ContextKV:
        """The clean prefix and motion frames' keys/values, the same for every flow step of a
        segment with these conditions (DiT.context_kv); pass them to `forward` as `context`."""
        layout = cond.layout(new)
        return self.dit.context_kv(
            torch.cat([cond.prefix, cond.motion], dim=2),
            layout,
            text=self.text_encoder(cond.text),
            text_lens=cond.text.lens,
            audio=cond.audio,
        )

    def velocity(
        self, cond: LRConditions, guidance: Guidance | None = None, *, cache_context: bool = False
    ) -> VelocityFn:
        """The sampler's velocity function for the new frames of one segment (from the estimate).

        cache_context: compute the clean context's keys/values once per guidance batch and run
        only the new frames at every step (`context_kv`; the same velocities). Worth it from two
        steps on: with one, the context is computed once either way."""
        if not cache_context:
            return guided_velocity(self, cond, guidance)
        contexts: dict[int, tuple[LRConditions, ContextKV]] = {}  # keeps each batch alive: ids stay unique

        def estimate(z: Tensor, t: Tensor, batch: LRConditions) -> Tensor:
            if id(batch) not in contexts:
                contexts[id(batch)] = (batch, self.context_kv(batch, z.shape[2]))
            return self(z, t, batch, context=contexts[id(batch)][1])

        return guided_velocity(estimate, cond, guidance)

    def guidance(self) -> Guidance:
        """The configured per-condition guidance scales."""
        f = self.config.flow
        return Guidance(CONDITIONS, (f.guidance_reference, f.guidance_audio, f.guidance_text))
