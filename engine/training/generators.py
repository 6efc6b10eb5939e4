"""The `ihuman train lr-a2v|refiner` tasks: the two generators on video-autoencoder latents.

Both read the bundle's trained autoencoder (and, for LR-A2V, its audio
encoder; for the refiner, its pose head) frozen, and build training segments
exactly as the live engine meets them:

- the reference frame is encoded alone, then the window's frames follow it in
  groups of 4 — the same latent stream the engine's causal decoder is primed
  with (the prefix first), so the generated latents are decoded as they were
  encoded;
- LR-A2V segments carry `motion` clean latents before the `new` ones, except
  for a share of segments with none (the start of a stream); their audio
  windows have the left context and the lookahead the planner gives them;
- the refiner's pose tensor comes from the ground-truth keypoints or, for
  half of the batches, from the pose head on the LR frames — what it gets at
  inference — so it learns to use both (and to survive the head's errors).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.audio.windows import latent_audio_windows
from engine.checkpoint import PART_BUILDERS, BundleError, load_bundle
from engine.config import Config
from engine.data.pose_tensor import pose_tensor
from engine.flow import sample_training_time
from engine.models.text import tokenize
from engine.parts import REQUIRED, Parts
from engine.training.steps import LRA2VBatch, RefinerBatch, lr_a2v_step, refiner_step
from engine.training.task import Task

STREAM_START_RATE = 0.15  # share of LR-A2V segments trained without motion latents
PREDICTED_POSE_RATE = 0.5  # share of refiner batches guided by the pose head instead of the truth
EVAL_TIMES = (0.25, 0.5, 0.75)  # flow times of the held-out loss (fixed, so runs compare)


def trained_parts(config: Config, bundle: Path | None, names: tuple[str, ...]) -> Parts:
    """The bundle's trained `names` (frozen, eval) and fresh generators, as one Parts."""
    have = (
        load_bundle(bundle, names).parts if bundle is not None and (bundle / "config.json").is_file() else {}
    )
    missing = [n for n in names if n not in have]
    if missing:
        raise BundleError(
            f"{bundle} has no trained {', '.join(missing)}: train them first (ihuman train "
            f"{' / '.join(missing)} --out {bundle})"
        )
    for module in have.values():
        module.eval().requires_grad_(False)
    fresh = {n: PART_BUILDERS[n](config) for n in REQUIRED if n not in have}
    return Parts(config=config, **have, **fresh, source=f"training from {bundle}")


def _clip(reference: Tensor, frames: Tensor) -> Tensor:
    """reference [B, 3, H, W] + frames [B, T, 3, H, W] -> the autoencoder's clip [B, 3, 1 + T, H, W]."""
    return torch.cat([reference[:, :, None], frames.transpose(1, 2)], dim=2)


class LRA2VTask(Task):
    parts: Parts

    @staticmethod
    def window_frames(config: Config) -> int:
        """Video frames of a training window: left audio context + motion and new frames + lookahead."""
        s, a = config.segment, config.audio
        return (
            a.left_context_frames
            + config.time.vae_temporal_stride * (s.motion_latents + s.new_latents)
            + a.lookahead_frames
        )

    @torch.no_grad()
    def make_batch(self, batch: dict, start_of_stream: bool | None = None) -> LRA2VBatch:
        cfg = self.parts.config
        s, left = cfg.segment, cfg.audio.left_context_frames
        video = batch["frames"][
            :, left : left + cfg.time.vae_temporal_stride * (s.motion_latents + s.new_latents)
        ]
        latents = self.parts.vae.encode(_clip(batch["reference"], video))  # [B, C, 1 + M + N, h, w]
        features = self.parts.audio.encode_audio(batch["audio"])  # [B, T, D]
        windows = latent_audio_windows(features, left, s.motion_latents + s.new_latents, cfg)
        if start_of_stream is None:
            start_of_stream = bool(torch.rand(()) < STREAM_START_RATE)
        motion = 0 if start_of_stream else s.motion_latents
        first_new = 1 + s.motion_latents
        B = latents.shape[0]
        return LRA2VBatch(
            prefix=latents[:, :, :1],
            motion=latents[:, :, first_new - motion : first_new],
            target=latents[:, :, first_new:],
            audio=windows[:, s.motion_latents - motion :],
            text=tokenize([None] * B, cfg.text),
        )

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        result = lr_a2v_step(self.model, self.make_batch(batch))
        return result.loss, {}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        losses = []
        for b in batches:
            data = self.make_batch(b, start_of_stream=False)
            for t in EVAL_TIMES:
                times = torch.full((data.target.shape[0],), t)
                losses.append(float(lr_a2v_step(self.model, data, generator=g, t=times).loss))
        self.model.train()
        return {"held_out_flow_loss": sum(losses) / len(losses)}


class RefinerTask(Task):
    parts: Parts

    @staticmethod
    def window_frames(config: Config) -> int:
        return config.time.vae_temporal_stride * (
            config.segment.refiner_motion_latents + config.segment.new_latents
        )

    @torch.no_grad()
    def make_batch(self, batch: dict, predicted_pose: bool | None = None) -> RefinerBatch:
        cfg = self.parts.config
        hr_frames, reference = batch["frames"], batch["reference"]  # [B, T, 3, H, W], [B, 3, H, W]
        B, T = hr_frames.shape[:2]
        lr_size = (cfg.lr.height, cfg.lr.width)
        lr_frames = F.interpolate(hr_frames.flatten(0, 1), size=lr_size, mode="bilinear", antialias=True)
        lr_reference = F.interpolate(reference, size=lr_size, mode="bilinear", antialias=True)
        hr_latents = self.parts.vae.encode(_clip(reference, hr_frames))
        lr_latents = self.parts.vae.encode(_clip(lr_reference, lr_frames.view(B, T, 3, *lr_size)))
        pose = batch["pose"]  # [B, 8, T, Hp, Wp] from the ground truth
        if predicted_pose is None:
            predicted_pose = bool(torch.rand(()) < PREDICTED_POSE_RATE)
        if predicted_pose:
            points, _ = self.parts.pose(lr_frames.clamp(0, 1))
            Hp, Wp = cfg.pose_size
            pose = torch.stack([pose_tensor(p, Wp, Hp) for p in points.view(B, T, *points.shape[1:])])
        motion = cfg.segment.refiner_motion_latents
        return RefinerBatch(
            prefix=hr_latents[:, :, :1],
            motion=hr_latents[:, :, 1 : 1 + motion],
            target=hr_latents[:, :, 1 + motion :],
            lr=lr_latents[:, :, 1 + motion :],
            pose=pose[:, :, motion * cfg.time.vae_temporal_stride :],
            text=tokenize([None] * B, cfg.text),
        )

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        result = refiner_step(self.model, self.make_batch(batch))
        return result.loss, {}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        losses = {True: [], False: []}
        for b in batches:
            for predicted in (False, True):
                data = self.make_batch(b, predicted_pose=predicted)
                t = sample_training_time(data.target.shape[0], generator=g)
                losses[predicted].append(float(refiner_step(self.model, data, generator=g, t=t).loss))
        self.model.train()
        mean = {k: sum(v) / len(v) for k, v in losses.items()}
        return {"held_out_flow_loss_true_pose": mean[False], "held_out_flow_loss_predicted_pose": mean[True]}
