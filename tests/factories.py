"""Random inputs of the right shapes for a config, and 'as if trained' weights."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch
from torch import nn

from engine.config import AudioConfig, Config, DiTConfig, Resolution, TextConfig, TimeBase, VAEConfig
from engine.models.lr_a2v import LRConditions
from engine.models.refiner import RefinerConditions
from engine.models.text import tokenize
from engine.presets import get_preset
from engine.training.steps import LRA2VBatch, RefinerBatch

T = TypeVar("T")


def randomize_(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Give every parameter random values, as a trained model would have.

    A fresh model is the identity on its residual paths (adaLN-zero, zero
    condition projections), so it ignores its conditions by construction;
    tests about what conditions do need weights that are not zero.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def to_device(batch: T, device: str) -> T:
    """A copy of a batch dataclass with every tensor (and text) on `device` (None stays None)."""
    changes = {}
    for f in dataclasses.fields(batch):  # type: ignore[arg-type]
        value = getattr(batch, f.name)
        changes[f.name] = None if value is None else value.to(device)
    return dataclasses.replace(batch, **changes)  # type: ignore[type-var]


def lr_batch(config: Config, batch: int = 2, motion: int | None = None, new: int | None = None) -> LRA2VBatch:
    C, (h, w) = config.latent_channels, config.lr_latent_grid
    M = config.segment.motion_latents if motion is None else motion
    N = config.segment.new_latents if new is None else new
    audio = torch.randn(batch, M + N, config.audio_tokens_per_latent, config.audio.feature_dim)
    texts = ["a person talking", None][:batch] + ["hello"] * max(0, batch - 2)
    return LRA2VBatch(
        prefix=torch.randn(batch, C, config.segment.prefix_latents, h, w),
        motion=torch.randn(batch, C, M, h, w),
        target=torch.randn(batch, C, N, h, w),
        audio=audio,
        text=tokenize(texts, config.text),
        still=torch.randn(batch, C, 1, h, w),
    )


def lr_conditions(b: LRA2VBatch) -> LRConditions:
    return LRConditions(prefix=b.prefix, motion=b.motion, audio=b.audio, text=b.text, still=b.still)


def refiner_batch(config: Config, batch: int = 2, motion: int | None = None) -> RefinerBatch:
    C, (H, W), (h, w) = config.latent_channels, config.hr_latent_grid, config.lr_latent_grid
    M = config.segment.refiner_motion_latents if motion is None else motion
    N = config.segment.new_latents
    pose_frames = N * config.time.vae_temporal_stride
    return RefinerBatch(
        prefix=torch.randn(batch, C, config.segment.prefix_latents, H, W),
        motion=torch.randn(batch, C, M, H, W),
        target=torch.randn(batch, C, N, H, W),
        lr=torch.randn(batch, C, N, h, w),
        pose=torch.rand(batch, config.pose.channels, pose_frames, *config.pose_size),
        text=tokenize(["a person talking", None][:batch], config.text),
    )


def refiner_conditions(b: RefinerBatch) -> RefinerConditions:
    return RefinerConditions(
        prefix=b.prefix, motion=b.motion, lr=b.lr, pose=b.pose, text=b.text, lr_clean=b.lr
    )


def micro_config() -> Config:
    """The tiny preset shrunk to the smallest shapes the config allows: every part is real and
    runs in a few milliseconds per segment, for tests of the streaming machinery over long
    (virtual) times. Its autoencoder is spatial /8 (docs/design.md's default), the tiny preset's /4, so
    the tests cover both."""
    return get_preset("tiny").replace(
        name="micro",
        time=TimeBase(),
        lr=Resolution(32, 16),
        hr=Resolution(64, 32),
        latent_channels=4,
        lr_a2v=DiTConfig(width=32, depth=1, heads=2),
        refiner=DiTConfig(width=32, depth=1, heads=2),
        text=TextConfig(dim=16, depth=1, heads=1, max_bytes=16),
        audio=AudioConfig(
            feature_dim=16, left_context_frames=2, lookahead_frames=2, encoder_width=16, encoder_layers=1
        ),
        vae=VAEConfig(encoder_channels=(8, 8, 8), decoder_channels=(8, 8, 8)),
    )
