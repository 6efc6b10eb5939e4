"""What one segment costs: FLOPs and weight bytes per stage, counted on the meta device.

Counted with torch's FlopCounterMode on the real modules at the segment's real shapes (no memory,
no compute), so the numbers follow the code: a change to a model changes its count. The frame
budget says what a machine of a given throughput would need per segment at best, a floor to
measure real runs against (docs/perf.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from engine.config import Config
from engine.models.lr_a2v import LRA2V, LRConditions
from engine.models.pose import PoseHead
from engine.models.refiner import PGRefiner, RefinerConditions
from engine.models.text import tokenize
from engine.models.vae import Decoder, decoder_flops_per_frame

BYTES_PER_WEIGHT = 2  # bf16, as the GPU runs the generators


@dataclass(frozen=True)
class StageCost:
    """One piece of a segment's work."""

    name: str
    stage: str  # "low_res" or "refine": the worker that runs it
    flop: float  # per segment
    weight_bytes: float  # weights read per segment (each forward reads them once)
    calls: int  # forwards per segment


def _flop(fn: object, *args: object, **kwargs: object) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)  # type: ignore[operator]
    return float(counter.get_total_flops())


def _weights(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) * BYTES_PER_WEIGHT


def segment_costs(config: Config, lr_steps: int | None = None) -> list[StageCost]:
    """The work of one segment at `config`'s shapes, stage by stage (batch 1, guidance as
    configured: every guidance branch is one more row of the batched forward)."""
    steps = config.flow.lr_steps if lr_steps is None else lr_steps
    s, C = config.segment, config.latent_channels
    (h, w), (H, W) = config.lr_latent_grid, config.hr_latent_grid
    frames = config.segment_video_frames
    with torch.device("meta"):
        lr_model, refiner, pose, decoder = LRA2V(config), PGRefiner(config), PoseHead(config), Decoder(config)
        branches = len(lr_model.guidance().plan())
        text = tokenize(["a person talking"] * branches, config.text, "meta")
        lr_cond = LRConditions(
            prefix=torch.zeros(branches, C, s.prefix_latents, h, w),
            motion=torch.zeros(branches, C, s.motion_latents, h, w),
            audio=torch.zeros(branches, s.motion_latents + s.new_latents, config.audio_tokens_per_latent,
                              config.audio.feature_dim),
            text=text,
            still=torch.zeros(branches, C, 1, h, w),
        )  # fmt: skip
        z_lr, t = torch.zeros(branches, C, s.new_latents, h, w), torch.zeros(branches)
        lr_latents = torch.zeros(1, C, s.new_latents, h, w)
        refine_cond = RefinerConditions(
            prefix=torch.zeros(1, C, s.prefix_latents, H, W),
            motion=torch.zeros(1, C, s.refiner_motion_latents, H, W),
            lr=lr_latents,
            pose=torch.zeros(1, config.pose.channels, frames, *config.pose_size),
            text=tokenize(["a person talking"], config.text, "meta"),
            lr_clean=lr_latents,
        )
        z_hr = torch.zeros(1, C, s.new_latents, H, W)
        lr_frames = torch.zeros(frames, 3, config.lr.height, config.lr.width)
    with torch.no_grad():
        if steps > 1:  # the stage caches the clean context's keys/values (LRA2V.velocity)
            lr_flop = _flop(lr_model.context_kv, lr_cond, s.new_latents)
            context = lr_model.context_kv(lr_cond, s.new_latents)
            lr_flop += steps * _flop(lr_model, z_lr, t, lr_cond, context=context)
            lr_calls = steps + 1
        else:
            lr_flop, lr_calls = _flop(lr_model, z_lr, t, lr_cond), 1
        refine_forward = _flop(refiner, z_hr, t[:1], refine_cond)
        pose_flop = _flop(pose, lr_frames)
    lr_decode = decoder_flops_per_frame(config, config.lr.width, config.lr.height) * frames
    hr_decode = decoder_flops_per_frame(config, config.hr.width, config.hr.height) * frames
    return [
        StageCost("LR-A2V", "low_res", lr_flop, _weights(lr_model) * lr_calls, lr_calls),
        StageCost("LR decode", "low_res", lr_decode, _weights(decoder), 1),
        StageCost("pose head", "low_res", pose_flop, _weights(pose), 1),
        StageCost("PG-Refiner", "refine", refine_forward * config.flow.refiner_steps,
                  _weights(refiner) * config.flow.refiner_steps, config.flow.refiner_steps),
        StageCost("HR decode", "refine", hr_decode, _weights(decoder), 1),
    ]  # fmt: skip


def segment_floor_ms(costs: list[StageCost], tflops: float, stage: str | None = None) -> float:
    """The least time the segment's work (or one stage's) takes at `tflops` TFLOP/s sustained."""
    flop = sum(c.flop for c in costs if stage is None or c.stage == stage)
    return flop / (tflops * 1e12) * 1000
