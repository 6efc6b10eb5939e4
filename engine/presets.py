"""The named presets: `tiny` (real time on 2 CPU cores, the demo), `small` (one GPU), `paper`
(the paper's size, for speed with random weights or for trained weights)."""

from __future__ import annotations

from engine.config import (
    AudioConfig,
    Config,
    DiTConfig,
    FlowConfig,
    PoseConfig,
    Resolution,
    SegmentConfig,
    TextConfig,
    TimeBase,
    VAEConfig,
)
from engine.exceptions import ConfigError

TINY = Config(
    # Streams in real time on a 2-core CPU; the transport scales it to 1280x720.
    name="tiny",
    lr=Resolution(160, 96),
    hr=Resolution(320, 176),
    latent_channels=8,
    # Spatial /4 with 1x4x4 patches: the same 16-pixel tokens as /8 with 1x2x2, but 4x the latent
    # per pixel; at 160x96 a face is ~24 px and /8 lost the mouth (measured: docs/design.md).
    time=TimeBase(vae_spatial_stride=4),
    lr_a2v=DiTConfig(width=128, depth=4, heads=4, patch=(1, 4, 4)),
    refiner=DiTConfig(width=128, depth=4, heads=4, patch=(1, 4, 4)),
    text=TextConfig(dim=64, depth=1, heads=2, max_bytes=64),
    audio=AudioConfig(
        feature_dim=64, left_context_frames=2, lookahead_frames=2, encoder_width=64, encoder_layers=3
    ),
    pose=PoseConfig(stride=4),
    # Half of its own motion fed back: the demo's LR-A2V gains nothing from more yet, and its errors
    # would compound (docs/demo.md, "Motion fed back").
    segment=SegmentConfig(
        new_latents=2, motion_latents=1, refiner_motion_latents=0, lr_context_tokens=True, motion_feedback=0.5
    ),
    # One Euler step: from t = 0 it lands on LR-A2V's clean estimate (x-prediction from the still
    # reference), at half the time of two; so three quarters of its training is at t = 0, on the
    # estimate (docs/demo.md). Audio guidance 2 (docs/design.md). No text is used, so the text
    # scale equals the audio's: the plan is then two estimates (all conditions; audio and text
    # dropped), not three. The refiner samples one step too: three quarters of its training at t = 0.
    flow=FlowConfig(
        lr_steps=1,
        guidance_audio=2.0,
        guidance_text=2.0,
        lr_loss="estimate",
        lr_sampler_time_share=0.75,
        refiner_sampler_time_share=0.75,
    ),
    # ~0.4 GFLOP per 320x176 output frame: the decoder must keep up with 25 fps on 2 CPU cores.
    vae=VAEConfig(encoder_channels=(32, 64), decoder_channels=(16, 8)),
)

SMALL = Config(
    # A one-GPU development size.
    name="small",
    lr=Resolution(320, 176),
    hr=Resolution(640, 352),
    latent_channels=16,
    lr_a2v=DiTConfig(width=512, depth=12, heads=8),
    refiner=DiTConfig(width=512, depth=12, heads=8),
    text=TextConfig(dim=256, depth=2, heads=4, max_bytes=256),
    audio=AudioConfig(feature_dim=256, left_context_frames=4, lookahead_frames=2),
    pose=PoseConfig(stride=4),
    segment=SegmentConfig(new_latents=2, motion_latents=3, refiner_motion_latents=1, lr_context_tokens=True),
)

PAPER = Config(
    # ~1.3B-parameter DiTs like the real-time video DiTs of the literature (Wan-1.3B shape);
    # LR 640x352 -> 880 tokens per latent frame, HR 1280x720 -> 3600.
    name="paper",
    lr=Resolution(640, 352),
    hr=Resolution(1280, 720),
    latent_channels=16,
    lr_a2v=DiTConfig(width=1536, depth=30, heads=12),
    refiner=DiTConfig(width=1536, depth=30, heads=12),
    text=TextConfig(dim=512, depth=4, heads=8, max_bytes=512),
    audio=AudioConfig(feature_dim=768, left_context_frames=4, lookahead_frames=2),
    pose=PoseConfig(stride=4),
    # prefix 1 + motion 5 + new 2 = 8 LR latent frames = 7040 tokens of self-attention;
    # prefix 1 + HR motion 1 + new 2 = 4 HR latent frames = 14400 tokens.
    segment=SegmentConfig(new_latents=2, motion_latents=5, refiner_motion_latents=1, lr_context_tokens=True),
)

PRESETS: dict[str, Config] = {c.name: c for c in (TINY, SMALL, PAPER)}


def get_preset(name: str) -> Config:
    """The named preset, or a ConfigError listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
