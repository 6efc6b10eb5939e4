"""attention(q, k, v, groups=, kv_lens=): the one attention op of the models.

q [B, H, Lq, D], k/v [B, H, Lk, D] (any strides, last axis contiguous for the
kernel). `groups` (token counts of consecutive groups) makes it block-causal
by group, for self-attention over [prefix | motion | new]; `kv_lens` [B]
limits the keys each batch row sees (padded text). The Triton forward runs
on CUDA (`triton_fwd.py`); the reference is SDPA with the dense mask
(`reference.py`). Backward: when autograd needs the result (training), the
reference runs, and SDPA's own backward (flash / memory-efficient on a GPU)
computes the gradients; the Triton kernel is inference only.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from ihuman_kernels.attention.reference import attention_by_group, attention_reference, block_causal_mask
from ihuman_kernels.attention.triton_fwd import HEAD_DIMS, MAX_GROUPS, attention_triton
from ihuman_kernels.dispatch import choose
from ihuman_kernels.errors import KernelError

log = logging.getLogger(__name__)

DTYPES = (torch.float16, torch.bfloat16, torch.float32)

__all__ = ["attention", "attention_by_group", "attention_reference", "block_causal_mask"]


@torch.library.custom_op("ihuman::flash_attention_fwd", mutates_args=())
def _flash_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, ends: Tensor | None, kv_lens: Tensor | None, group_ends: list[int] | None
) -> Tensor:
    """The Triton forward as a custom op, so torch.compile traces through it (group_ends: the
    group boundaries `ends` holds, on the host, for the tuner's SDPA candidate)."""
    return attention_triton(q, k, v, ends, kv_lens, group_ends=group_ends)


@_flash_attention_fwd.register_fake
def _(
    q: Tensor, k: Tensor, v: Tensor, ends: Tensor | None, kv_lens: Tensor | None, group_ends: list[int] | None
) -> Tensor:
    return q.new_empty(q.shape)


@functools.lru_cache(maxsize=64)
def _group_ends(groups: tuple[int, ...], device: torch.device) -> Tensor:
    """Cumulative group ends, the kernel's mask description (cached: every step reuses it)."""
    return torch.tensor(list(itertools.accumulate(groups)), dtype=torch.int32, device=device)


def _check(q: Tensor, k: Tensor, v: Tensor, groups: Sequence[int] | None, kv_lens: Tensor | None) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise KernelError(f"attention: {name} must be [B, H, L, D], got {x.dim()} dims {list(x.shape)}")
        if not x.dtype.is_floating_point:
            raise KernelError(f"attention: {name} is {x.dtype}; attention needs floating point")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise KernelError(f"attention: q, k, v differ in dtype or device ({q.dtype}/{k.dtype}/{v.dtype})")
    if q.shape[:2] != k.shape[:2] or k.shape != v.shape:
        raise KernelError(
            f"attention: batch and heads must match and k, v must agree: q {list(q.shape)}, "
            f"k {list(k.shape)}, v {list(v.shape)}"
        )
    if q.shape[3] != k.shape[3]:
        raise KernelError(f"attention: head dims differ: q {q.shape[3]}, k {k.shape[3]}")
    if groups is not None:
        if not groups or any(g <= 0 for g in groups) or len(groups) > MAX_GROUPS:
            raise KernelError(
                f"attention: groups must be 1..{MAX_GROUPS} positive token counts, got {groups}"
            )
        if sum(groups) != q.shape[2] or q.shape[2] != k.shape[2]:
            raise KernelError(
                f"attention: groups {tuple(groups)} cover {sum(groups)} tokens; self-attention over "
                f"Lq={q.shape[2]}, Lk={k.shape[2]} needs them equal"
            )
    if kv_lens is not None:
        if kv_lens.shape != (q.shape[0],) or kv_lens.dtype.is_floating_point:
            raise KernelError(
                f"attention: kv_lens must be integers [B={q.shape[0]}], got {list(kv_lens.shape)}"
            )
        # Values are checked on the CPU only, outside torch.compile: reading them from a GPU would
        # stall the stream, and a traced read splits the compiled graph.
        checkable = kv_lens.device.type == "cpu" and not torch.compiler.is_compiling()
        if checkable and (int(kv_lens.min()) < 1 or int(kv_lens.max()) > k.shape[2]):
            raise KernelError(f"attention: kv_lens must lie in 1..Lk={k.shape[2]}")


def _check_for_kernel(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dtype not in DTYPES:
        raise KernelError(f"attention: the kernel takes fp16, bf16 or fp32, not {q.dtype}")
    if q.shape[3] not in HEAD_DIMS:
        raise KernelError(f"attention: head dim {q.shape[3]} has no kernel; supported: {HEAD_DIMS}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.stride(3) != 1:
            raise KernelError(f"attention: {name}'s last axis must be contiguous (stride {x.stride(3)})")


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    groups: Sequence[int] | None = None,
    kv_lens: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Scaled dot-product attention -> [B, H, Lq, D]; see the module docstring."""
    _check(q, k, v, groups, kv_lens)
    if groups is not None and len(groups) == 1:
        groups = None  # one group is full attention
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if needs_grad or choose("attention", q.device, backend) == "reference":
        return attention_reference(q, k, v, groups, kv_lens)
    _check_for_kernel(q, k, v)
    ends = _group_ends(tuple(groups), q.device) if groups is not None else None
    lens = kv_lens.to(torch.int32) if kv_lens is not None else None
    host_ends = list(itertools.accumulate(groups)) if groups is not None else None
    return _flash_attention_fwd(q, k, v, ends, lens, host_ends)
