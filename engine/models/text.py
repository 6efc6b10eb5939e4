"""A small byte-level text encoder: prompts need no tokenizer files and never hit a hub.

Text is optional everywhere. No text, empty text and dropped text are the same
thing: the single beginning-of-text token, which is also the unconditional
input of classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.config import TextConfig
from engine.models.layers import MLP, RMSNorm, SelfAttention


@dataclass(frozen=True)
class TextTokens:
    """A padded batch of byte ids: ids [B, T] (BOS first), lens [B] valid ids per row."""

    ids: Tensor
    lens: Tensor

    @property
    def batch(self) -> int:
        return self.ids.shape[0]

    def to(self, device: torch.device | str) -> TextTokens:
        return TextTokens(self.ids.to(device), self.lens.to(device))

    @staticmethod
    def cat(parts: Sequence[TextTokens]) -> TextTokens:
        """Concatenate along the batch axis, padding ids to the longest row."""
        width = max(p.ids.shape[1] for p in parts)
        ids = torch.cat([torch.nn.functional.pad(p.ids, (0, width - p.ids.shape[1])) for p in parts])
        return TextTokens(ids, torch.cat([p.lens for p in parts]))

    def drop(self, keep: Tensor) -> TextTokens:
        """Rows where keep [B] is False become the empty text (just BOS)."""
        lens = torch.where(keep, self.lens, torch.ones_like(self.lens))
        positions = torch.arange(self.ids.shape[1], device=self.ids.device)[None, :]
        ids = torch.where(positions < lens[:, None], self.ids, torch.zeros_like(self.ids))
        return TextTokens(ids, lens)


def tokenize(
    texts: Sequence[str | None],
    cfg: TextConfig,
    device: torch.device | str = "cpu",
    *,
    full_length: bool = False,
) -> TextTokens:
    """UTF-8 bytes of each text after a BOS token, cut to `cfg.max_bytes`, padded with zeros to
    the longest text, or with full_length to 1 + max_bytes whatever the texts (one shape for every
    prompt: what compiled models need; the lengths mask the padding either way)."""
    rows = [[cfg.bos_id, *(text or "").encode("utf-8")[: cfg.max_bytes]] for text in texts]
    length = 1 + cfg.max_bytes if full_length else max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows], dtype=torch.long, device=device)
    lens = torch.tensor([len(r) for r in rows], dtype=torch.long, device=device)
    return TextTokens(ids, lens)


class _TextBlock(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.norm_attn = RMSNorm(cfg.dim)
        self.attn = SelfAttention(cfg.dim, cfg.heads)
        self.norm_mlp = RMSNorm(cfg.dim)
        self.mlp = MLP(cfg.dim, 4 * cfg.dim)

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        x = x + self.attn(self.norm_attn(x), kv_lens=lens)
        return x + self.mlp(self.norm_mlp(x))


class ByteTextEncoder(nn.Module):
    """Byte embeddings + learned positions + a few pre-norm transformer blocks -> [B, T, dim]."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.position = nn.Parameter(torch.zeros(cfg.max_bytes + 1, cfg.dim))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(_TextBlock(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim)

    def forward(self, tokens: TextTokens) -> Tensor:
        """TextTokens -> features [B, T, dim]; padding positions are zero."""
        T = tokens.ids.shape[1]
        x = self.embed(tokens.ids) + self.position[:T]
        for block in self.blocks:
            x = block(x, tokens.lens)
        valid = torch.arange(T, device=x.device)[None, :] < tokens.lens[:, None]
        return self.norm(x) * valid[..., None]
