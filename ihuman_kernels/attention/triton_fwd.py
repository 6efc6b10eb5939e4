"""Flash-attention forward in Triton: online softmax, fp32 accumulation, a block-causal mask
described by a few group boundaries, per-batch key lengths.

Layout: q, k, v are [B, H, L, D] with any strides except a contiguous last
axis. That is what the models hold after splitting heads (a transposed view of
[B, L, H, D]), and what SDPA takes, so no copy is ever made to call us.

The mask is never materialised: `ends` holds the cumulative token counts of
the groups [prefix | motion | new]; a query row in group g sees the keys
before the end of group g, so the clean context never reads the noisy
frames (its keys and values can be cached across flow steps). Each program
stops its key loop at the furthest key any of its rows may see, so masked
blocks cost nothing. `kv_lens` further limits keys per batch row (padded text).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ihuman_kernels.attention.reference import attention_by_group
from ihuman_kernels.attention.tuning import SDPA, choose_config, shape_key
from ihuman_kernels.dispatch import INTERPRET

MAX_GROUPS = 8
HEAD_DIMS = (16, 32, 64, 128)

# ----- kernel --------------------------------------------------------------------------------------


@triton.jit
def _attention_fwd_kernel(
    Q, K, V, Out, ends_ptr, kv_lens_ptr,
    sqb, sqh, sql, skb, skh, skl, svb, svh, svl, sob, soh, sol,
    H, Lq, Lk, n_groups, qk_scale,
    HAS_GROUPS: tl.constexpr, HAS_KV_LENS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + b * sqb + h * sqh + offs_m[:, None] * sql + offs_d[None, :]
    q = tl.load(q_ptrs, mask=offs_m[:, None] < Lq, other=0.0)
    if UPCAST:  # the interpreter computes bf16 wrongly: work in fp32 from the load on
        q = q.to(tl.float32)

    # The last key each row may see: the end of its group, then the batch row's key length.
    row_end = tl.full([BLOCK_M], Lk, tl.int32)
    if HAS_GROUPS:
        for g in range(0, n_groups):
            end = tl.load(ends_ptr + g)
            row_end = tl.where((offs_m < end) & (end < row_end), end, row_end)
    if HAS_KV_LENS:
        row_end = tl.minimum(row_end, tl.load(kv_lens_ptr + b))
    block_end = tl.max(tl.where(offs_m < Lq, row_end, 0), axis=0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    for start_n in range(0, block_end, BLOCK_N):
        cols = start_n + offs_n
        k = tl.load(k_base + cols[:, None] * skl + offs_d[None, :], mask=cols[:, None] < Lk, other=0.0)
        v = tl.load(v_base + cols[:, None] * svl + offs_d[None, :], mask=cols[:, None] < Lk, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        s = tl.where(cols[None, :] < row_end[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_ptrs = Out + b * sob + h * soh + offs_m[:, None] * sol + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < Lq)


# ----- launch settings -----------------------------------------------------------------------------


def launch_config(head_dim: int, dtype: torch.dtype) -> dict[str, int]:
    """Block sizes, warps and stages. The interpreter gets small blocks (its cost grows with the
    tile count x tile size); on a GPU, 16-bit inputs start from these and `tuning.py` times the
    alternatives on each shape."""
    if INTERPRET:
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}
    if dtype == torch.float32 and head_dim == 128:  # 4-byte tiles: the 16-bit ones overflow shared memory
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    if dtype == torch.float32:
        return {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3}
    if head_dim == 128:
        return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


# ----- host wrapper --------------------------------------------------------------------------------


def attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    ends: Tensor | None,
    kv_lens: Tensor | None,
    out: Tensor | None = None,
    group_ends: Sequence[int] | None = None,
) -> Tensor:
    """Launch the kernel; the inputs were checked by `kernels.attention.attention`.

    out: where to write [B, H, Lq, D] (tests pass a poisoned buffer to see every element written).
    On a GPU, 16-bit inputs run with what was timed fastest for their shape (`tuning.py`): the
    kernel's launch settings, or SDPA group by group (`group_ends`: `ends` on the host).
    """
    B, H, Lq, D = q.shape
    if out is None:
        out = torch.empty((B, H, Lq, D), device=q.device, dtype=q.dtype)
    config = launch_config(D, q.dtype)
    if q.is_cuda and not INTERPRET and q.dtype != torch.float32:
        key = shape_key(q, k, ends is not None, kv_lens is not None)
        sdpa = (SDPA,) if kv_lens is None and (ends is None or group_ends is not None) else ()
        run = lambda c: launch(q, k, v, ends, kv_lens, out, c, group_ends=group_ends)  # noqa: E731
        config = choose_config(key, run, config, sdpa)
    return launch(q, k, v, ends, kv_lens, out, config, group_ends=group_ends)


def launch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    ends: Tensor | None,
    kv_lens: Tensor | None,
    out: Tensor,
    config: dict,
    *,
    group_ends: Sequence[int] | None = None,
) -> Tensor:
    """One launch with the given block sizes, warps and stages (`launch_config`'s keys), or
    `tuning.SDPA`: torch's SDPA group by group."""
    if config.get("sdpa"):
        return attention_by_group(q, k, v, group_ends, out)
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    grid = (triton.cdiv(Lq, config["BLOCK_M"]), B * H)
    dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
    _attention_fwd_kernel[grid](
        q, k, v, out,
        ends if ends is not None else dummy,
        kv_lens if kv_lens is not None else dummy,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        H, Lq, Lk, 0 if ends is None else ends.numel(),
        D**-0.5 * 1.4426950408889634,  # softmax scale in log2 units (the kernel uses exp2)
        HAS_GROUPS=ends is not None,
        HAS_KV_LENS=kv_lens is not None,
        UPCAST=INTERPRET and q.dtype == torch.bfloat16,
        HEAD_DIM=D,
        **config,
    )  # fmt: skip
    return out
