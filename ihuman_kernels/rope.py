"""Fused 3D rotary embedding apply: rotate consecutive channel pairs of x [B, H, L, D] by the
per-token angles of cos/sin [L, D/2] (the (t, h, w) tables of engine.models.layers.rope_3d).

One read and one write of x, the rotation in fp32 whatever the dtype.
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
def _rope_kernel(
    X, Cos, Sin, Out,
    H, L, sxb, sxh, sxl, sob, soh, sol,
    HALF: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    pid_l = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    pairs = tl.arange(0, HALF)
    inside = rows[:, None] < L
    base = X + b * sxb + h * sxh + rows[:, None] * sxl
    x0 = tl.load(base + 2 * pairs[None, :], mask=inside, other=0.0).to(tl.float32)
    x1 = tl.load(base + 2 * pairs[None, :] + 1, mask=inside, other=0.0).to(tl.float32)
    cos = tl.load(Cos + rows[:, None] * HALF + pairs[None, :], mask=inside, other=0.0)
    sin = tl.load(Sin + rows[:, None] * HALF + pairs[None, :], mask=inside, other=0.0)
    out = Out + b * sob + h * soh + rows[:, None] * sol
    tl.store(out + 2 * pairs[None, :], (x0 * cos - x1 * sin).to(Out.dtype.element_ty), mask=inside)
    tl.store(out + 2 * pairs[None, :] + 1, (x0 * sin + x1 * cos).to(Out.dtype.element_ty), mask=inside)


# ----- launch settings -----------------------------------------------------------------------------


def launch_config() -> dict[str, int]:
    return {"BLOCK_L": 16, "num_warps": 1} if INTERPRET else {"BLOCK_L": 64, "num_warps": 4}


# ----- host wrapper --------------------------------------------------------------------------------


def _check(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    if x.dim() != 4:
        raise KernelError(f"apply_rope: x must be [B, H, L, D], got {list(x.shape)}")
    L, D = x.shape[2], x.shape[3]
    if D % 2 or cos.shape != (L, D // 2) or sin.shape != cos.shape:
        raise KernelError(
            f"apply_rope: cos/sin must be [L={L}, D/2={D // 2}], got {list(cos.shape)}, {list(sin.shape)}"
        )


def apply_rope_triton(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
    B, H, L, D = x.shape
    if triton.next_power_of_2(D // 2) != D // 2:
        raise KernelError(f"apply_rope: head dim {D} has no kernel (D/2 must be a power of two)")
    x = x if x.stride(3) == 1 else x.contiguous()
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    if out is None:
        out = torch.empty((B, H, L, D), device=x.device, dtype=x.dtype)
    config = launch_config()
    grid = (triton.cdiv(L, config["BLOCK_L"]), B * H)
    _rope_kernel[grid](
        x, cos, sin, out, H, L,
        x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
        HALF=D // 2, **config,
    )  # fmt: skip
    return out


def apply_rope_reference(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs.unbind(-1)
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)


# ----- public function -----------------------------------------------------------------------------


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, *, backend: str | None = None) -> Tensor:
    """x [B, H, L, D] rotated pairwise by cos/sin [L, D/2]."""
    _check(x, cos, sin)
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if needs_grad or choose("apply_rope", x.device, backend) == "reference":
        return apply_rope_reference(x, cos, sin)
    return apply_rope_triton(x, cos, sin)
