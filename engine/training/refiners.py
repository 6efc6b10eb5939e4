"""The `ihuman train refiner|distill` tasks: the PG-Refiner on video-autoencoder latents, and its
one-step student."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import Config
from engine.flow import euler_sample, sample_training_time, sampling_times
from engine.media.image import cover
from engine.models.refiner import PGRefiner, RefinerConditions
from engine.models.text import tokenize
from engine.parts import Parts
from engine.pose.pose_tensor import pose_tensor
from engine.randomness import randn
from engine.training.steps import RefinerBatch, degraded_conditions, refiner_step
from engine.training.task import Task
from engine.training.windows import clip_with_reference, psnr

PREDICTED_POSE_RATE = 0.5  # share of refiner windows guided by the pose head instead of the truth


@dataclass
class RefinerTask(Task):
    parts: Parts  # the trained autoencoder and pose head it reads (frozen)
    READS: ClassVar[tuple[str, ...]] = ("vae", "pose")  # those parts' names: its windows' store key

    def frozen(self) -> list[nn.Module]:
        return [getattr(self.parts, name) for name in self.READS]

    @staticmethod
    def window_frames(config: Config) -> int:
        return config.time.vae_temporal_stride * (
            config.segment.refiner_motion_latents + config.segment.new_latents
        )

    @torch.no_grad()
    def encode(self, batch: dict, predicted_pose: bool | None = None) -> dict[str, Tensor]:
        """What the frozen parts make of a window of HR frames: `hr` latents [B, C, 1 + M + N, H,
        W] (the reference, then the window), the new frames' `lr` latents [B, C, N, h, w] and the
        `pose` raster [B, 8, T, Hp, Wp] as bytes. The pose is the truth's or, for a share of the
        windows (None) or all of them (True), the pose head's on the LR frames. Stored once by
        `ihuman train refiner --latent-cache` (latent_windows.py): rendering HR windows, the pose
        head and its raster (drawn on the CPU) starved the refiner's steps on a GPU. As bytes (in
        steps of 1/255) the rasters of 3,200 windows of the tiny preset take 0.7 GB, not 2.9."""
        cfg = self.parts.config
        hr_frames, reference = batch["frames"], batch["reference"]  # [B, T, 3, H, W], [B, 3, H, W]
        B, T = hr_frames.shape[:2]
        lr_size = (cfg.lr.height, cfg.lr.width)
        # Framed as the engine frames the LR video: the centre of the HR frame (media.image.cover).
        lr_frames = cover(hr_frames.flatten(0, 1), cfg.lr.width, cfg.lr.height)
        lr_reference = cover(reference, cfg.lr.width, cfg.lr.height)
        hr_latents = self.parts.vae.encode(clip_with_reference(reference, hr_frames))
        lr_clip = clip_with_reference(lr_reference, lr_frames.view(B, T, 3, *lr_size))
        lr_latents = self.parts.vae.encode(lr_clip)
        pose = batch["pose"]  # [B, 8, T, Hp, Wp] from the ground truth
        if predicted_pose is None:
            predicted = torch.rand(B) < PREDICTED_POSE_RATE
        else:
            predicted = torch.full((B,), predicted_pose)
        if predicted.any():
            points, _ = self.parts.pose(lr_frames.clamp(0, 1))
            Hp, Wp = cfg.pose_size
            points = points.view(B, T, *points.shape[1:]).cpu()  # the raster is drawn on the CPU
            pose = pose.clone()
            for i in predicted.nonzero().flatten().tolist():
                pose[i] = pose_tensor(points[i], Wp, Hp).to(pose.device)
        motion = cfg.segment.refiner_motion_latents
        return {
            "hr": hr_latents,
            "lr": lr_latents[:, :, 1 + motion :],
            "pose": (pose * 255).round().to(torch.uint8),
        }

    def assemble(self, encoded: dict[str, Tensor]) -> RefinerBatch:
        """A training batch from `encode`'s tensors."""
        cfg = self.parts.config
        hr_latents, motion = encoded["hr"], cfg.segment.refiner_motion_latents
        return RefinerBatch(
            prefix=hr_latents[:, :, :1],
            motion=hr_latents[:, :, 1 : 1 + motion],
            target=hr_latents[:, :, 1 + motion :],
            lr=encoded["lr"],
            pose=encoded["pose"][:, :, motion * cfg.time.vae_temporal_stride :].float() / 255,
            text=tokenize([None] * hr_latents.shape[0], cfg.text, hr_latents.device),
        )

    def make_batch(self, batch: dict, predicted_pose: bool | None = None) -> RefinerBatch:
        """A training batch from a window of HR frames (None: the pose head's pose by chance)."""
        return self.assemble(self.encode(batch, predicted_pose))

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        result = refiner_step(self.model, self.make_batch(batch))
        return result.loss, {}

    def latent_loss(self, encoded: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The loss on stored `encode` tensors (--latent-cache): the same loss, no frames."""
        result = refiner_step(self.model, self.assemble(encoded))
        return result.loss, {}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        losses = {True: [], False: []}
        for b in batches:
            for predicted in (False, True):
                data = self.make_batch(b, predicted_pose=predicted)
                t = sample_training_time(data.target.shape[0], generator=g, device=data.target.device)
                losses[predicted].append(float(refiner_step(self.model, data, generator=g, t=t).loss))
        self.model.train()
        mean = {k: sum(v) / len(v) for k, v in losses.items()}
        return {"held_out_flow_loss_true_pose": mean[False], "held_out_flow_loss_predicted_pose": mean[True]}


@dataclass
class DistillTask(RefinerTask):
    """One-step refiner distilled from the multi-step one.

    Method: regression onto the teacher's K-step sample from the same noise and
    conditions (the deterministic ODE map noise -> sample), in latent space plus
    an L1 between the two decoded videos (the frozen decoder as a cheap
    perceptual proxy), student initialised from the teacher. Why this: the
    refiner is strongly conditioned — a degraded LR latent, the pose tensor and
    the reference decide nearly everything — so its conditional output is close
    to unimodal and the noise -> sample map is smooth, which a single step fits
    by plain regression; that is stable and cheap enough for a CPU. Consistency
    distillation needs many more training steps to converge, and an adversarial
    term needs a discriminator that is hard to keep balanced at this scale.

    The bundle keeps the teacher as `refiner_teacher`; `refiner` becomes the student.
    """

    teacher: PGRefiner
    teacher_steps: int = 4
    pixel_weight: float = 1.0

    def frozen(self) -> list[nn.Module]:
        return [*super().frozen(), self.teacher]

    def _decode(self, prefix: Tensor, latents: Tensor) -> Tensor:
        """The frames of `latents` decoded after the prefix (as the engine's primed decoder does)."""
        return self.parts.vae.decode(torch.cat([prefix, latents], dim=2))[:, :, 1:]

    def _pair(
        self, data: RefinerBatch, g: torch.Generator | None
    ) -> tuple[Tensor, Tensor, RefinerConditions]:
        cond = degraded_conditions(data, self.parts.config.degradation, g)
        noise = randn(data.target.shape, generator=g, device=data.target.device)
        shift = self.parts.config.flow.refiner_time_shift
        with torch.no_grad():
            teacher = euler_sample(
                self.teacher.velocity(cond), noise, sampling_times(self.teacher_steps, shift)
            )
        t0 = torch.zeros(noise.shape[0], device=noise.device)
        student = self.model(noise, t0, cond)  # one Euler step from t = 0 lands on the estimate
        return student, teacher, cond

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        data = self.make_batch(batch)
        student, teacher, _ = self._pair(data, None)
        latent = F.mse_loss(student, teacher)
        with torch.no_grad():
            target = self._decode(data.prefix, teacher)
        pixels = F.l1_loss(self._decode(data.prefix, student), target)
        stats = {"latent_mse": float(latent.detach()), "pixel_l1": float(pixels.detach())}
        return latent + self.pixel_weight * pixels, stats

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        """PSNR of the student's and the teacher's frames against the real ones, and their times."""
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        psnr_student, psnr_teacher, agree, t_student, t_teacher = [], [], [], 0.0, 0.0
        shift = self.parts.config.flow.refiner_time_shift
        for b in batches:
            data = self.make_batch(b, predicted_pose=True)
            cond = degraded_conditions(data, self.parts.config.degradation, g)
            noise = randn(data.target.shape, generator=g, device=data.target.device)
            start = time.perf_counter()
            teacher = euler_sample(
                self.teacher.velocity(cond), noise, sampling_times(self.teacher_steps, shift)
            )
            middle = time.perf_counter()
            student = euler_sample(self.model.velocity(cond), noise, sampling_times(1, shift))
            t_teacher, t_student = t_teacher + middle - start, t_student + time.perf_counter() - middle
            real = self._decode(data.prefix, data.target).clamp(0, 1)
            frames_t, frames_s = (self._decode(data.prefix, z).clamp(0, 1) for z in (teacher, student))
            psnr_teacher.append(psnr(frames_t, real))
            psnr_student.append(psnr(frames_s, real))
            agree.append(psnr(frames_s, frames_t))
        self.model.train()
        n = len(batches)
        return {
            "student_psnr_db": sum(psnr_student) / n,
            "teacher_psnr_db": sum(psnr_teacher) / n,
            "student_vs_teacher_psnr_db": sum(agree) / n,
            "teacher_steps": float(self.teacher_steps),
            "speedup": t_teacher / max(t_student, 1e-9),
        }
