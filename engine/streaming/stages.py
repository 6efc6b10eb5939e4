"""The two compute stages of a session, shared by `ihuman render` and the live engine.

    LowResStage   audio windows + motion latents -> LR-A2V (k Euler steps) -> new LR latents
    RefineStage   LR latents -> LR decode -> pose head -> pose tensor P'
                  -> PG-Refiner (1 step) on the degraded LR latent -> HR decode -> frames

DESIGN.md's data flow runs them as stream A and stream B: segment n + 1's
low-res generation may overlap segment n's refinement, so the stages share
nothing mutable. Each keeps its own per-session state (motion latents, the
autoencoder's causal decoder memory, its noise generator); the reference
prefix latents are encoded once per session (`Reference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.config import Config
from engine.data.pose_tensor import pose_tensor
from engine.flow import euler_sample, sampling_times
from engine.media.image import fit_image
from engine.models.degradation import degrade_latent, inference_degradation
from engine.models.lr_a2v import LRConditions
from engine.models.refiner import RefinerConditions
from engine.models.text import tokenize
from engine.models.vae import DecoderState
from engine.parts import Parts
from engine.streaming.segments import Segment


@dataclass(frozen=True)
class GenerationSettings:
    """Per-session choices; the defaults come from the config."""

    lr_steps: int  # Euler steps of LR-A2V per segment
    refiner_steps: int  # Euler steps of the refiner (1 once distilled)
    seed: int = 0  # noise of both stages
    text: str | None = None  # optional prompt for both generators

    @classmethod
    def from_config(cls, config: Config, **overrides: object) -> GenerationSettings:
        values = {"lr_steps": config.flow.lr_steps, "refiner_steps": config.flow.refiner_steps}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reference:
    """The reference image's prefix latents at both resolutions (computed once per session)."""

    lr_prefix: Tensor  # [1, C, 1, h, w]
    hr_prefix: Tensor  # [1, C, 1, H, W]

    @classmethod
    @torch.no_grad()
    def encode(cls, parts: Parts, image: Tensor) -> Reference:
        """image uint8 [3, H, W] of any size (fitted to each resolution by cover + centre crop)."""
        cfg, device = parts.config, parts.device
        lr = fit_image(image, cfg.lr.width, cfg.lr.height)[None].to(device)
        hr = fit_image(image, cfg.hr.width, cfg.hr.height)[None].to(device)
        return cls(lr_prefix=parts.vae.encode_image(lr), hr_prefix=parts.vae.encode_image(hr))


def _keep_last(history: Tensor, new: Tensor, count: int) -> Tensor:
    """The last `count` latent frames of [history | new] along the frame axis."""
    both = torch.cat([history, new], dim=2)
    return both[:, :, both.shape[2] - count :]


class LowResStage:
    """LR-A2V for one session: each call generates the new latents of the next segment."""

    def __init__(self, parts: Parts, reference: Reference, settings: GenerationSettings) -> None:
        cfg, device = parts.config, parts.device
        self.config, self.model = cfg, parts.lr_a2v
        self.prefix = reference.lr_prefix
        self.text = tokenize([settings.text], cfg.text, device)
        self.times = sampling_times(settings.lr_steps, cfg.flow.lr_time_shift, device)
        self.guidance = self.model.guidance()
        self.generator = torch.Generator(device).manual_seed(settings.seed)
        self.motion = self.prefix[:, :, :0]  # the last generated latents, up to segment.motion_latents

    @torch.no_grad()
    def run(self, seg: Segment, audio: Tensor) -> Tensor:
        """audio windows [1, M + N, A, D] -> the segment's new LR latents [1, C, N, h, w]."""
        motion = self.motion[:, :, self.motion.shape[2] - seg.motion_latents :]
        if motion.shape[2] != seg.motion_latents:
            raise ValueError(
                f"segment {seg.index} needs {seg.motion_latents} motion latents; segments run in order"
            )
        cond = LRConditions(prefix=self.prefix, motion=motion, audio=audio, text=self.text)
        C, (h, w) = self.config.latent_channels, self.config.lr_latent_grid
        noise = torch.randn(1, C, seg.new_latents, h, w, generator=self.generator, device=self.prefix.device)
        latents = euler_sample(self.model.velocity(cond, self.guidance), noise, self.times)
        self.motion = _keep_last(self.motion, latents, self.config.segment.motion_latents)
        return latents


@dataclass(frozen=True)
class RefinedSegment:
    frames: Tensor  # uint8 [T, H, W, 3] the HR output frames, on the CPU
    lr_frames: Tensor  # float [T, 3, h, w] the decoded LR frames (a fallback when refining is late)
    keypoints: Tensor  # [T, K, 2] canvas units, as the pose head saw them


class RefineStage:
    """LR decode, pose, PG-Refiner and HR decode for one session."""

    def __init__(self, parts: Parts, reference: Reference, settings: GenerationSettings) -> None:
        cfg, device = parts.config, parts.device
        self.config, self.parts = cfg, parts
        self.prefix = reference.hr_prefix
        self.text = tokenize([settings.text], cfg.text, device)
        self.times = sampling_times(settings.refiner_steps, cfg.flow.refiner_time_shift, device)
        self.sigma, self.noise_level = inference_degradation(1, cfg.degradation, str(device))
        # Its own generator: the stages may run at the same time on two threads or CUDA streams.
        self.generator = torch.Generator(device).manual_seed(settings.seed + 1)
        self.motion = self.prefix[:, :, :0]  # the last HR latents, up to segment.refiner_motion_latents
        self.lr_decoder = self._primed(reference.lr_prefix)
        self.hr_decoder = self._primed(reference.hr_prefix)

    @torch.no_grad()
    def _primed(self, prefix: Tensor) -> DecoderState:
        # The prefix is the first latent of each stream (decoded alone, to one frame, which is
        # dropped); it gives the causal decoder the memory the generated latents follow.
        _, state = self.parts.vae.decoder.decode(prefix)
        return state

    @torch.no_grad()
    def run(self, lr_latents: Tensor) -> RefinedSegment:
        """The new LR latents [1, C, N, h, w] of a segment -> its 4N refined frames."""
        cfg, parts = self.config, self.parts
        lr_video, self.lr_decoder = parts.vae.decoder.decode(lr_latents, self.lr_decoder)
        lr_frames = lr_video[0].transpose(0, 1).clamp(0, 1)  # [T, 3, h, w]
        points, _ = parts.pose(lr_frames)  # [T, K, 2]
        Hp, Wp = cfg.pose_size
        # The rasteriser is plain torch on the CPU (strokes in bounding boxes); its tensor is small.
        pose = pose_tensor(points.float().cpu(), Wp, Hp)[None].to(lr_latents)  # [1, 8, T, Hp, Wp]
        degraded = degrade_latent(lr_latents, self.sigma, self.noise_level, self.generator)
        cond = RefinerConditions(
            prefix=self.prefix, motion=self.motion, lr=degraded, pose=pose, text=self.text
        )
        C, (H, W) = cfg.latent_channels, cfg.hr_latent_grid
        noise = torch.randn(
            1, C, lr_latents.shape[2], H, W, generator=self.generator, device=lr_latents.device
        )
        hr_latents = euler_sample(parts.refiner.velocity(cond), noise, self.times)
        self.motion = _keep_last(self.motion, hr_latents, cfg.segment.refiner_motion_latents)
        video, self.hr_decoder = parts.vae.decoder.decode(hr_latents, self.hr_decoder)  # [1, 3, T, H, W]
        frames = (video[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        return RefinedSegment(frames=frames, lr_frames=lr_frames, keypoints=points)
