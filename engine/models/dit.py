"""The diffusion transformer shared by LR-A2V and the PG-Refiner.

patchify 1x2x2 -> blocks -> final layer -> unpatchify. Each block is

    x = x + gate_sa  * SA(modulate(norm(x)), rope, block-causal groups)
    x = x + CA(norm(x), text) + CA_frame(norm(x), audio)        # CA_mm, the paper's audio branch
    x = x + gate_mlp * MLP(modulate(norm(x)))

with adaLN modulation computed per latent frame from that frame's flow time
(clean context frames have t = 1). As in Wan, one projection of the time
embedding is shared by all blocks and each block adds its own learned table;
both start at zero (adaLN-zero), and the cross-attention output projections
start at zero too, so a fresh block is exactly the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.config import DiTConfig
from engine.exceptions import InputShapeError
from engine.models.layers import (
    MLP,
    CrossAttention,
    FrameCrossAttention,
    RMSNorm,
    SelfAttention,
    TimestepEmbedder,
    gate,
    modulate_norm,
    rope_3d,
)
from engine.models.layout import SegmentLayout

# ----- helpers -----------------------------------------------------------------------------------


def patchify(x: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """[B, C, F, H, W] -> [B, F*(H/ph)*(W/pw), C*ph*pw] in frame-major token order (pt = 1)."""
    B, C, F, H, W = x.shape
    _, ph, pw = patch
    x = x.view(B, C, F, H // ph, ph, W // pw, pw)
    return x.permute(0, 2, 3, 5, 1, 4, 6).reshape(B, F * (H // ph) * (W // pw), C * ph * pw)


def unpatchify(tokens: Tensor, patch: tuple[int, int, int], frames: int, grid: tuple[int, int]) -> Tensor:
    """[B, F*h*w, C*ph*pw] -> [B, C, F, h*ph, w*pw]; the inverse of `patchify`."""
    B = tokens.shape[0]
    _, ph, pw = patch
    h, w = grid
    x = tokens.view(B, frames, h, w, -1, ph, pw)
    return x.permute(0, 4, 1, 2, 5, 3, 6).reshape(B, -1, frames, h * ph, w * pw)


# ----- block -------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig, *, text: bool, audio: bool) -> None:
        super().__init__()
        w = cfg.width
        # Learned per-block offsets of (shift, scale, gate) x (attention, MLP), added to the
        # shared time modulation; zero with it, so the gates are zero at init (adaLN-zero).
        self.modulation = nn.Parameter(torch.zeros(6, w))
        self.norm_sa = RMSNorm(w, cfg.norm_eps, affine=False)
        self.self_attn = SelfAttention(w, cfg.heads, cfg.norm_eps)
        self.norm_ca = RMSNorm(w, cfg.norm_eps) if (text or audio) else None
        self.text_attn = CrossAttention(w, cfg.heads, cfg.norm_eps) if text else None
        self.audio_attn = FrameCrossAttention(w, cfg.heads, cfg.norm_eps) if audio else None
        self.norm_mlp = RMSNorm(w, cfg.norm_eps, affine=False)
        self.mlp = MLP(w, cfg.mlp_hidden)

    def forward(
        self,
        x: Tensor,
        time_mod: Tensor,
        rope: tuple[Tensor, Tensor],
        groups: tuple[int, ...] | None,
        text: Tensor | None,
        text_lens: Tensor | None,
        audio: Tensor | None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x [B, L, W]; time_mod [B, F, 6, W]; text [B, T, W]; audio [B, Fa, A, W] for the last Fa
        frames; past: cached keys/values of clean context in front of x (SelfAttention.forward_kv).
        Returns the new x and its self-attention keys/values."""
        shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = (time_mod + self.modulation).unbind(2)
        h = modulate_norm(self.norm_sa, x, shift_sa, scale_sa)
        attended, kv = self.self_attn.forward_kv(h, rope, groups=groups, past=past)
        x = x + gate(attended, gate_sa)  # [B, L, W]

        if self.norm_ca is not None:
            h = self.norm_ca(x)
            branches = x
            if self.text_attn is not None and text is not None:
                branches = branches + self.text_attn(h, text, text_lens)
            if self.audio_attn is not None and audio is not None:
                B, L, W = h.shape
                frames = time_mod.shape[1]
                tokens = L // frames
                cond_frames = audio.shape[1]
                tail = h[:, (frames - cond_frames) * tokens :].view(B, cond_frames, tokens, W)
                audio_out = self.audio_attn(tail, audio).view(B, cond_frames * tokens, W)
                # Frames before the audio window (the reference prefix) get no audio branch.
                branches = branches + nn.functional.pad(audio_out, (0, 0, L - audio_out.shape[1], 0))
            x = branches

        h = modulate_norm(self.norm_mlp, x, shift_mlp, scale_mlp)
        return x + gate(self.mlp(h), gate_mlp), kv


# ----- final layer -------------------------------------------------------------------------------


class FinalLayer(nn.Module):
    """Modulated norm and a zero-initialised linear map from tokens back to latent patches."""

    def __init__(self, cfg: DiTConfig, out_features: int) -> None:
        super().__init__()
        self.modulation = nn.Parameter(torch.zeros(2, cfg.width))
        self.norm = RMSNorm(cfg.width, cfg.norm_eps, affine=False)
        self.linear = nn.Linear(cfg.width, out_features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        """x [B, L, W], t_emb [B, F, W] -> [B, L, out_features]."""
        shift, scale = (t_emb[:, :, None] + self.modulation).unbind(2)
        return self.linear(modulate_norm(self.norm, x, shift, scale))


# ----- model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextKV:
    """The clean context's self-attention keys and values [B, H, L, D], one pair per block."""

    layers: tuple[tuple[Tensor, Tensor], ...]
    frames: int  # context latent frames they cover


class DiT(nn.Module):
    """A video DiT over a `[prefix | motion | new]` latent sequence with per-frame flow time.

    Text enters through cross-attention over the whole sequence, audio (when
    built with `audio_dim`) through a per-frame cross-attention branch, and
    spatially aligned conditions (pose, LR latent) as `token_cond` added to the
    patch embeddings of the frames they belong to.
    """

    def __init__(
        self,
        cfg: DiTConfig,
        *,
        in_channels: int,
        out_channels: int,
        text_dim: int | None,
        audio_dim: int | None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.out_channels = out_channels
        w = cfg.width
        self.patch_embed = nn.Linear(in_channels * cfg.patch_volume, w)
        self.time_embed = TimestepEmbedder(w)
        self.time_modulation = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))
        nn.init.zeros_(self.time_modulation[1].weight)
        nn.init.zeros_(self.time_modulation[1].bias)
        self.text_embed = MLP(text_dim, w, w) if text_dim else None
        self.audio_embed = MLP(audio_dim, w, w) if audio_dim else None
        self.blocks = nn.ModuleList(
            DiTBlock(cfg, text=text_dim is not None, audio=audio_dim is not None) for _ in range(cfg.depth)
        )
        self.final = FinalLayer(cfg, out_channels * cfg.patch_volume)

    def token_grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        _, ph, pw = self.cfg.patch
        h, w = latent_hw
        if h % ph or w % pw:
            raise InputShapeError(f"latent grid {h}x{w} is not divisible by the patch {ph}x{pw}")
        return h // ph, w // pw

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        layout: SegmentLayout,
        *,
        text: Tensor | None = None,
        text_lens: Tensor | None = None,
        audio: Tensor | None = None,
        token_cond: Tensor | None = None,
        out_frames: int | None = None,
        context: ContextKV | None = None,
    ) -> Tensor:
        """Predict the velocity of a latent sequence.

        x [B, C, F, H, W] latents in `layout` order; t [B, F] per-frame flow time;
        text [B, T, text_dim] with text_lens [B]; audio [B, Fa, A, audio_dim] for the
        last Fa frames; token_cond [B, Lc, W] added to the last Lc tokens;
        out_frames: predict only the last that many frames (default: all).
        context: the clean context's keys/values from `context_kv` for these conditions; x and t
        then hold the new frames only (layout.new), and the output is theirs.
        Returns [B, C_out, out_frames, H, W].
        """
        if context is None:
            layout.check(x)
            first = 0
        else:
            if x.dim() != 5 or x.shape[2] != layout.new:
                raise InputShapeError(
                    f"with a cached context x holds the {layout.new} new frames, got {list(x.shape)}"
                )
            first = layout.context
        frames, H, W = x.shape[2:]
        grid = self.token_grid((H, W))
        tokens_per_frame = grid[0] * grid[1]

        h = self.patch_embed(patchify(x, self.cfg.patch))  # [B, L, W]
        if token_cond is not None:
            h = h + nn.functional.pad(token_cond, (0, 0, h.shape[1] - token_cond.shape[1], 0))
        t_emb = self.time_embed(t)  # [B, F, W]
        time_mod = self.time_modulation(t_emb).unflatten(-1, (6, -1))  # [B, F, 6, W]
        rope = rope_3d((first + frames, *grid), self.cfg.rope_split, self.cfg.rope_theta, x.device)
        rope = (rope[0][first * tokens_per_frame :], rope[1][first * tokens_per_frame :])
        groups = None
        if self.cfg.context_attention == "block_causal" and context is None:
            groups = tuple(n * tokens_per_frame for n in layout.groups)
        text_tokens = self.text_embed(text) if (self.text_embed is not None and text is not None) else None
        audio_tokens = (
            self.audio_embed(audio) if (self.audio_embed is not None and audio is not None) else None
        )
        if audio_tokens is not None and context is not None:
            audio_tokens = audio_tokens[:, -frames:]  # the new frames' windows; the context's are cached

        for i, block in enumerate(self.blocks):
            past = None if context is None else context.layers[i]
            h, _ = block(h, time_mod, rope, groups, text_tokens, text_lens, audio_tokens, past)  # [B, L, W]

        out_frames = frames if out_frames is None else out_frames
        h = h[:, (frames - out_frames) * tokens_per_frame :]
        out = self.final(h, t_emb[:, frames - out_frames :])  # [B, L_out, C*ph*pw]
        return unpatchify(out, self.cfg.patch, out_frames, grid)  # [B, C, out_frames, H, W]

    def context_kv(
        self,
        x: Tensor,
        layout: SegmentLayout,
        *,
        text: Tensor | None = None,
        text_lens: Tensor | None = None,
        audio: Tensor | None = None,
    ) -> ContextKV:
        """Every block's self-attention keys/values of the clean context frames x [B, C,
        layout.context, H, W] (flow time 1), given the same conditions as `forward` (audio for all
        of the segment's frames; the context's own windows are used).

        Under block-causal attention the context never attends to the new frames, so these are
        the same for every flow step of a segment: `forward(..., context=...)` then runs the new
        frames alone (Lnew queries against Lctx + Lnew keys) instead of the whole sequence."""
        if self.cfg.context_attention != "block_causal":
            raise InputShapeError("a cached context needs block-causal context attention")
        if x.dim() != 5 or x.shape[2] != layout.context or layout.context == 0:
            raise InputShapeError(
                f"context_kv needs the {layout.context} context frames, got {list(x.shape)}"
            )
        frames, H, W = x.shape[2:]
        grid = self.token_grid((H, W))
        tokens_per_frame = grid[0] * grid[1]
        h = self.patch_embed(patchify(x, self.cfg.patch))
        t_emb = self.time_embed(x.new_ones(x.shape[0], frames))
        time_mod = self.time_modulation(t_emb).unflatten(-1, (6, -1))
        rope = rope_3d((frames, *grid), self.cfg.rope_split, self.cfg.rope_theta, x.device)
        groups = tuple(n * tokens_per_frame for n in (layout.prefix, layout.motion) if n > 0)
        text_tokens = self.text_embed(text) if (self.text_embed is not None and text is not None) else None
        audio_tokens = None
        if self.audio_embed is not None and audio is not None and layout.motion > 0:
            audio_tokens = self.audio_embed(audio[:, : audio.shape[1] - layout.new])  # the motion frames'
        layers = []
        for block in self.blocks:
            h, kv = block(h, time_mod, rope, groups, text_tokens, text_lens, audio_tokens)
            layers.append(kv)
        return ContextKV(tuple(layers), layout.context)
