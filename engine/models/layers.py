"""Layers shared by the generators and the text encoder.

RMSNorm, adaLN modulation from the flow time, 3D rotary position embedding over
(t, h, w), MLP, and self-/cross-attention. Every attention goes through the one
`attention(q, k, v, ...)` op of `ihuman_kernels/` (Triton flash attention on CUDA,
SDPA elsewhere), so the mask is described by a few integers (token groups, key
lengths) rather than a dense L x L tensor; the fused norm + modulation and the
RoPE apply come from there too.

Token order everywhere is frame-major: a sequence of F latent frames with an
h x w token grid each has L = F * h * w tokens, frame f owning tokens
[f*h*w, (f+1)*h*w). Per-frame conditioning (flow time, audio) relies on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ihuman_kernels import apply_rope, attention, rms_norm_modulate

# The attention, fused norm + modulation and RoPE ops live in `ihuman_kernels/` (Triton on CUDA, plain
# torch elsewhere); the models call them through these names.
__all__ = [
    "MLP",
    "CrossAttention",
    "FrameCrossAttention",
    "RMSNorm",
    "SelfAttention",
    "TimestepEmbedder",
    "apply_rope",
    "attention",
    "gate",
    "modulate_norm",
    "rope_3d",
]


# ----- normalisation and modulation ----------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, with an optional learned gain."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            x = x * self.weight.float()
        return x.to(dtype)


def modulate_norm(norm: RMSNorm, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN over a normalised input: `norm(x) * (1 + scale) + shift`, one (shift, scale) per frame.

    x [B, L, W] with L = F * N tokens; shift/scale [B, F, W]. One fused kernel on CUDA.
    """
    return rms_norm_modulate(x, shift, scale, norm.weight, norm.eps)


def gate(x: Tensor, g: Tensor) -> Tensor:
    """Per-frame gate of a residual branch: x [B, L, W], g [B, F, W]."""
    B, L, W = x.shape
    frames = g.shape[1]
    return (x.view(B, frames, L // frames, W) * g[:, :, None]).view(B, L, W)


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] -> sinusoidal features -> MLP -> [.., width]."""

    def __init__(self, width: int, freq_dim: int = 256, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        # Scale [0, 1] to [0, 1000] so the sinusoids resolve small differences in t.
        angles = (t.float() * 1000.0)[..., None] * freqs
        emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


# ----- rotary position embedding -------------------------------------------------------------------


def rope_3d(
    grid: tuple[int, int, int],
    split: tuple[int, int, int],
    theta: float,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """cos/sin tables [L, D/2] for a (frames, height, width) token grid in frame-major order.

    `split` gives the head channels of each axis (each even); the pair index
    runs over t's pairs, then h's, then w's. Tables are cached per shape and
    device: every flow step of a segment reuses them. Treat them as read-only.
    """
    return _rope_3d(tuple(grid), tuple(split), float(theta), torch.device(device))


@functools.lru_cache(maxsize=32)
def _rope_3d(
    grid: tuple[int, int, int], split: tuple[int, int, int], theta: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    angles = []
    for size, dim, axis in zip(grid, split, range(3), strict=True):
        freqs = theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
        pos = torch.arange(size, device=device, dtype=torch.float64)
        axis_angles = pos[:, None] * freqs[None, :]  # [size, dim/2]
        shape = [1, 1, 1, dim // 2]
        shape[axis] = size
        angles.append(axis_angles.view(shape).expand(*grid, dim // 2))
    table = torch.cat(angles, dim=-1).reshape(-1, sum(split) // 2)
    return table.cos().float(), table.sin().float()


# ----- blocks --------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Two linear layers with a tanh-GELU between them."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _heads(x: Tensor, heads: int) -> Tensor:
    """[B, L, H*D] -> [B, H, L, D]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """[B, H, L, D] -> [B, L, H*D]."""
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with per-head RMS q/k norm and optional 3D RoPE."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads, eps)
        self.k_norm = RMSNorm(dim // heads, eps)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        *,
        groups: Sequence[int] | None = None,
        kv_lens: Tensor | None = None,
    ) -> Tensor:
        return self.forward_kv(x, rope, groups=groups, kv_lens=kv_lens)[0]

    def forward_kv(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        *,
        groups: Sequence[int] | None = None,
        kv_lens: Tensor | None = None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The output [B, L, W] and this x's keys and values [B, H, L, D] (after norm and rope).

        past: keys and values of tokens in front of x (a cached clean context), which every token
        of x attends to in full, before x's own under `groups`."""
        q, k, v = (_heads(p, self.heads) for p in self.qkv(x).chunk(3, dim=-1))  # [B, H, L, D] each
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        return self.out(_merge(attention(q, keys, values, groups=groups, kv_lens=kv_lens))), (k, v)


class CrossAttention(nn.Module):
    """Queries from the video tokens, keys/values from a condition sequence.

    The output projection starts at zero so that adding a condition branch to a
    block (or a fresh block) leaves its residual path unchanged.
    """

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = RMSNorm(dim // heads, eps)
        self.k_norm = RMSNorm(dim // heads, eps)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, context: Tensor, kv_lens: Tensor | None = None) -> Tensor:
        """x [B, Lq, W], context [B, Lk, W] -> [B, Lq, W]."""
        q = self.q_norm(_heads(self.q(x), self.heads))
        k, v = (_heads(p, self.heads) for p in self.kv(context).chunk(2, dim=-1))
        k = self.k_norm(k)
        return self.out(_merge(attention(q, k, v, kv_lens=kv_lens)))


class FrameCrossAttention(CrossAttention):
    """Cross-attention where each latent frame attends only to its own condition window.

    Used for audio: the tokens of latent frame f attend to the audio features
    of f's video frames plus left context and lookahead, which ties lip motion
    to the sound at the same time instead of to the whole clip.
    """

    def forward(self, x: Tensor, context: Tensor, kv_lens: Tensor | None = None) -> Tensor:
        """x [B, Fc, N, W] tokens of the conditioned frames, context [B, Fc, A, W] -> [B, Fc, N, W]."""
        assert kv_lens is None, "frame windows are dense"
        B, frames, tokens, W = x.shape
        out = super().forward(x.reshape(B * frames, tokens, W), context.reshape(B * frames, -1, W))
        return out.view(B, frames, tokens, W)
