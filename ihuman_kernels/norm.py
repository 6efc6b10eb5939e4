"""Fused RMSNorm + adaLN modulation: `rmsnorm(x) * (1 + scale) + shift`, one (shift, scale) per frame.

x [B, L, W] holds F latent frames of N tokens each (L = F * N, frame-major);
shift, scale [B, F, W]. One pass over x instead of four (norm, multiply, add,
cast); statistics in fp32 whatever the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ihuman_kernels.dispatch import INTERPRET, choose
from ihuman_kernels.errors import KernelError

# ----- kernel --------------------------------------------------------------------------------------


@triton.jit
def _rms_norm_modulate_kernel(
    X, Shift, Scale, Weight, Out,
    L, N, W, eps,
    sxb, sxl, smb, smf, sob, sol,
    HAS_WEIGHT: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    b = row // L
    token = row % L
    frame = token // N
    cols = tl.arange(0, BLOCK_W)
    inside = cols < W
    x = tl.load(X + b * sxb + token * sxl + cols, mask=inside, other=0.0).to(tl.float32)
    x_hat = x * tl.math.rsqrt(tl.sum(x * x, axis=0) / W + eps)
    if HAS_WEIGHT:
        x_hat = x_hat * tl.load(Weight + cols, mask=inside, other=0.0).to(tl.float32)
    shift = tl.load(Shift + b * smb + frame * smf + cols, mask=inside, other=0.0).to(tl.float32)
    scale = tl.load(Scale + b * smb + frame * smf + cols, mask=inside, other=0.0).to(tl.float32)
    y = x_hat * (1.0 + scale) + shift
    tl.store(Out + b * sob + token * sol + cols, y.to(Out.dtype.element_ty), mask=inside)


# ----- launch settings -----------------------------------------------------------------------------


def launch_config(width: int) -> dict[str, int]:
    block = triton.next_power_of_2(width)
    return {"BLOCK_W": block, "num_warps": 1 if INTERPRET else min(16, max(1, block // 256))}


# ----- host wrapper --------------------------------------------------------------------------------


def _check(x: Tensor, shift: Tensor, scale: Tensor, weight: Tensor | None) -> None:
    if x.dim() != 3:
        raise KernelError(f"rms_norm_modulate: x must be [B, L, W], got {list(x.shape)}")
    B, L, W = x.shape
    if shift.shape != scale.shape or shift.dim() != 3 or shift.shape[0] != B or shift.shape[2] != W:
        got = f"{list(shift.shape)}, {list(scale.shape)}"
        raise KernelError(f"rms_norm_modulate: shift/scale must be [B={B}, F, W={W}], got {got}")
    if L % shift.shape[1]:
        raise KernelError(f"rms_norm_modulate: {L} tokens do not split into {shift.shape[1]} frames")
    if weight is not None and weight.shape != (W,):
        raise KernelError(f"rms_norm_modulate: weight must be [W={W}], got {list(weight.shape)}")


def rms_norm_modulate_triton(
    x: Tensor, shift: Tensor, scale: Tensor, weight: Tensor | None, eps: float, out: Tensor | None = None
) -> Tensor:
    B, L, W = x.shape
    x = x if x.stride(2) == 1 else x.contiguous()
    shift, scale = shift.contiguous(), scale.contiguous()
    if out is None:
        out = torch.empty((B, L, W), device=x.device, dtype=x.dtype)
    _rms_norm_modulate_kernel[(B * L,)](
        x, shift, scale, weight if weight is not None else shift, out,
        L, L // shift.shape[1], W, eps,
        x.stride(0), x.stride(1), shift.stride(0), shift.stride(1), out.stride(0), out.stride(1),
        HAS_WEIGHT=weight is not None,
        **launch_config(W),
    )  # fmt: skip
    return out


def rms_norm_modulate_reference(
    x: Tensor, shift: Tensor, scale: Tensor, weight: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    B, L, W = x.shape
    frames = shift.shape[1]
    h = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        h = h * weight.float()
    h = h.view(B, frames, L // frames, W) * (1 + scale.float()[:, :, None]) + shift.float()[:, :, None]
    return h.view(B, L, W).to(x.dtype)


# ----- public function -----------------------------------------------------------------------------


def rms_norm_modulate(
    x: Tensor,
    shift: Tensor,
    scale: Tensor,
    weight: Tensor | None = None,
    eps: float = 1e-6,
    *,
    backend: str | None = None,
) -> Tensor:
    """`rmsnorm(x) [* weight] * (1 + scale) + shift` per frame; x [B, L, W], shift/scale [B, F, W]."""
    _check(x, shift, scale, weight)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, shift, scale, weight)
    )
    if needs_grad or choose("rms_norm_modulate", x.device, backend) == "reference":
        return rms_norm_modulate_reference(x, shift, scale, weight, eps)
    return rms_norm_modulate_triton(x, shift, scale, weight, eps)
