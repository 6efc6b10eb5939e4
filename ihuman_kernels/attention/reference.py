"""The plain-torch reference of the attention op: SDPA with the equivalent dense mask."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=64)
def _block_causal_mask(groups: tuple[int, ...], device: torch.device) -> Tensor:
    group_of_token = torch.repeat_interleave(
        torch.arange(len(groups), device=device),
        torch.tensor(groups, device=device),
        output_size=sum(groups),
    )
    return group_of_token[None, :] <= group_of_token[:, None]  # [L, L], True = may attend


def block_causal_mask(groups: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Dense boolean mask [L, L] for token groups that attend to themselves and earlier groups.

    With groups (prefix, motion, new) the clean prefix sees only itself, the
    motion frames see prefix and motion, and the new frames see everything.
    Cached per shape and device; treat it as read-only.
    """
    return _block_causal_mask(tuple(int(g) for g in groups), torch.device(device))


def attention_reference(
    q: Tensor, k: Tensor, v: Tensor, groups: Sequence[int] | None = None, kv_lens: Tensor | None = None
) -> Tensor:
    """SDPA over q [B, H, Lq, D], k/v [B, H, Lk, D] with the block-causal and key-length masks."""
    mask: Tensor | None = None
    if groups is not None and len(groups) > 1:
        mask = block_causal_mask(groups, q.device)
    if kv_lens is not None:
        valid = torch.arange(k.shape[2], device=k.device)[None, :] < kv_lens[:, None]  # [B, Lk]
        valid = valid[:, None, None, :]
        mask = valid if mask is None else mask & valid
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention_by_group(
    q: Tensor, k: Tensor, v: Tensor, group_ends: Sequence[int] | None, out: Tensor
) -> Tensor:
    """Block-causal attention (no key lengths) as unmasked SDPA calls written into `out`, one per
    group: a group's queries attend to every key up to the group's end, plain attention over a
    prefix of the keys. With no mask to pass, SDPA may pick its fastest backends (cuDNN, flash),
    which take none; the FLOPs are those of the masked kernel."""
    if not group_ends:
        return out.copy_(F.scaled_dot_product_attention(q, k, v))
    start = 0
    for end in group_ends:
        out[:, :, start:end] = F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, :end], v[:, :, :end]
        )
        start = end
    return out
