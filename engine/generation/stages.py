"""The two compute stages of a session, shared by `ihuman render` and the live engine.

    LowResStage   audio windows + motion latents -> LR-A2V (k Euler steps from the still
                  reference) -> new LR latents
                  -> LR decode -> pose head                     (CUDA stream A | CPU thread A)
    RefineStage   pose tensor P' + degraded LR latent -> PG-Refiner (1 step from the LR latent)
                  -> HR decode -> frames                        (CUDA stream B | CPU thread B)

The live engine runs them as two workers, so segment n + 1's low-res work
overlaps segment n's refinement. The LR decode and the pose head sit in the
first stage (docs/design.md draws them in the second): there they balance the two
workers' compute (the HR decode alone outweighs LR-A2V on a CPU), and the
decoded LR frames, the fallback when the refiner is late, exist as soon as the
first stage ends. The stages share nothing mutable. Each keeps its own
per-session state (motion latents, the causal decoder's memory, its noise
generator); the reference prefix latents are encoded once per session
(`Reference`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import Config
from engine.exceptions import ConfigError, EngineError
from engine.flow import euler_sample, sampling_times
from engine.generation.detail import DetailTransfer, still_detail
from engine.generation.joins import LatentJoins
from engine.generation.segments import Segment
from engine.media.image import fit_image
from engine.models.degradation import degrade_latent, inference_degradation
from engine.models.lr_a2v import LRConditions
from engine.models.refiner import RefinerConditions, lr_on_hr_grid
from engine.models.text import TextTokens
from engine.models.vae import DecoderState
from engine.parts import Parts
from engine.pose.pose_tensor import pose_tensor


class StageError(EngineError):
    """A generator made what cannot be shown (NaN or infinite latents): the stream cannot go on."""


def check_finite(stage: str, latents: Tensor) -> None:
    # One reduction over a segment's latents, small beside the stage; unchecked, a NaN streams
    # as black frames (uint8 conversion) for the rest of the session.
    if not bool(torch.isfinite(latents).all()):
        raise StageError(f"{stage} produced non-finite values (NaN or inf)")


@dataclass(frozen=True)
class GenerationChoices:
    """What a caller chooses about generation, for a live session (SessionOptions) or a render
    (RenderOptions) alike; None = the config's."""

    lr_steps: int | None = None  # LR-A2V Euler steps per segment
    seed: int = 0  # noise of both stages: the same inputs and seed give the same video
    text: str | None = None  # optional prompt for both generators

    def __post_init__(self) -> None:
        if self.lr_steps is not None and self.lr_steps < 1:
            raise ConfigError(f"lr_steps must be >= 1, got {self.lr_steps}")


@dataclass(frozen=True)
class GenerationSettings:
    """The choices resolved against the config: what the stages run with."""

    lr_steps: int  # Euler steps of LR-A2V per segment
    refiner_steps: int  # Euler steps of the refiner (1 once distilled)
    seed: int = 0  # noise of both stages
    text: str | None = None  # optional prompt for both generators

    @classmethod
    def from_config(cls, config: Config, choices: GenerationChoices | None = None) -> GenerationSettings:
        choices, f = choices or GenerationChoices(), config.flow
        return cls(
            lr_steps=choices.lr_steps or f.lr_steps,
            refiner_steps=f.refiner_steps,  # validated by the config
            seed=choices.seed,
            text=choices.text,
        )


@dataclass(frozen=True)
class Reference:
    """The reference image's latents at both resolutions (computed once per session): the prefix;
    the LR stream's history — the picture held still for `segment.motion_latents` latents, which
    the first segment continues (LR-A2V always trains with motion latents from video, so a start
    from this history is one it knows; a start from the prefix alone is not); and the still latent
    LR-A2V's estimates start from (VideoAutoencoder.still_latent)."""

    lr_prefix: Tensor  # [1, C, 1, h, w]
    hr_prefix: Tensor  # [1, C, 1, H, W]
    lr_history: Tensor  # [1, C, M, h, w]
    lr_still: Tensor  # [1, C, 1, h, w]
    lr_picture: Tensor  # float [1, 3, h, w] in [0, 1]: the picture as the LR encoder saw it
    hr_picture: Tensor  # float [1, 3, H, W] in [0, 1]: ... and the HR one

    @classmethod
    @torch.no_grad()
    def encode(cls, parts: Parts, image: Tensor) -> Reference:
        """image uint8 [3, H, W] of any size (fitted to each resolution by cover + centre crop)."""
        cfg, device = parts.config, parts.device
        lr = fit_image(image, cfg.lr.width, cfg.lr.height)[None].to(device)
        hr = fit_image(image, cfg.hr.width, cfg.hr.height)[None].to(device)
        M = cfg.segment.motion_latents
        still = parts.vae.encode_still(lr, max(2, M))  # the prefix, then still latents (settled from 2)
        return cls(
            lr_prefix=still[:, :, :1],
            hr_prefix=parts.vae.encode_image(hr),
            lr_history=still[:, :, 1 : 1 + M],
            lr_still=still[:, :, -1:],
            lr_picture=lr,
            hr_picture=hr,
        )


def _keep_last(history: Tensor, new: Tensor, count: int) -> Tensor:
    """The last `count` latent frames of [history | new] along the frame axis."""
    both = torch.cat([history, new], dim=2)
    return both[:, :, both.shape[2] - count :]


@dataclass(frozen=True)
class DecodedLowRes:
    """A segment's LR latents, decoded, with the pose the refiner is guided by."""

    latents: Tensor  # [1, C, N, h, w]
    frames: Tensor  # float [T, 3, h, w] in [0, 1]
    keypoints: Tensor  # [T, K, 2] canvas units, from the pose head

    def preview(self, width: int, height: int) -> Tensor:
        """The LR frames upsampled to width x height: uint8 [T, H, W, 3] on the CPU (a fallback)."""
        up = F.interpolate(self.frames, size=(height, width), mode="bilinear", align_corners=False)
        return to_uint8(up)


def to_uint8(frames: Tensor) -> Tensor:
    """float [T, 3, H, W] in [0, 1] -> uint8 [T, H, W, 3] on the CPU."""
    return (frames.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@torch.no_grad()
def _primed_decoder(parts: Parts, history: Tensor) -> DecoderState:
    # The prefix is the first latent of each stream (decoded alone, to one frame), then any
    # history before the first segment; their frames are dropped: they give the causal decoder
    # the memory the generated latents follow.
    _, state = parts.vae.decode_stream(history)
    return state


StillPicture = Callable[[Reference], tuple[Tensor, Tensor, Tensor]]


class _Finish:
    """What a stage's decoded frames go through before they leave it: the reference's own detail
    where they did not move (generation/detail.py) and the joins between latent frames (joins.py).

    The detail's still frames cost two decodes, so they are made by the first segment after a
    picture is set, on the stage's own thread (a live session builds its stages, and sets a new
    picture, on the event loop). still_picture(reference) gives, at the stage's resolution, the
    latents its decoder was primed with, the picture, and the still latent."""

    def __init__(self, parts: Parts, still_picture: StillPicture, reference: Reference) -> None:
        cfg = parts.config
        self.parts, self.still_picture = parts, still_picture
        self.stride, self.tolerance = cfg.time.vae_temporal_stride, cfg.segment.detail_tolerance
        # first: the session's first picture, whose latents the stream's decoder was primed with;
        # a picture set later meets the memory of the last one, so its first frames get no lead.
        self.pending: tuple[Reference, bool] | None = (reference, True)
        self.detail: DetailTransfer | None = None
        self.joins = LatentJoins(self.stride) if cfg.segment.smooth_joins else None

    def set_reference(self, reference: Reference) -> None:
        self.pending = (reference, False)

    def __call__(self, frames: Tensor) -> Tensor:
        """float [T, 3, H, W] in [0, 1], decoded from whole latent frames -> the frames shown."""
        if self.pending is not None and self.tolerance > 0:  # 0: no detail, nothing to decode
            (reference, first), self.pending = self.pending, None
            primed_with, picture, still = self.still_picture(reference)
            primed = _primed_decoder(self.parts, primed_with)

            def decode(latents: Tensor) -> Tensor:
                return self.parts.vae.decode_stream(latents, primed)[0]

            self.detail = still_detail(decode, picture, still, self.stride, self.tolerance, with_lead=first)
        if self.detail is not None:
            frames = self.detail.apply(frames)
        return frames if self.joins is None else self.joins.apply(frames)


def _lr_still_picture(reference: Reference) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.cat([reference.lr_prefix, reference.lr_history], dim=2),
        reference.lr_picture,
        reference.lr_still,
    )


def _hr_still_picture(reference: Reference, config: Config) -> tuple[Tensor, Tensor, Tensor]:
    # The still frame is the one a fresh refiner makes of the picture held still (the LR still
    # latent on the HR grid); where a trained one changes more than the tolerance, its frame is
    # kept as it is.
    return reference.hr_prefix, reference.hr_picture, lr_on_hr_grid(reference.lr_still, config)


class LowResStage:
    """LR-A2V, LR decode and pose head for one session: each call does the next segment."""

    def __init__(self, parts: Parts, reference: Reference, settings: GenerationSettings) -> None:
        cfg, device = parts.config, parts.device
        self.config, self.parts, self.model = cfg, parts, parts.lr_a2v
        self.prefix, self.still = reference.lr_prefix, reference.lr_still
        self.text = parts.text_tokens(settings.text)
        self.steps = settings.lr_steps
        self.guidance = self.model.guidance()
        self.generator = torch.Generator(device).manual_seed(settings.seed)
        self.motion = reference.lr_history  # the last M latents: at first the still history
        self.decoder = _primed_decoder(parts, _lr_still_picture(reference)[0])
        self.finish = _Finish(parts, _lr_still_picture, reference)

    def set_reference(self, reference: Reference) -> None:
        """Animate another picture from the next segment: its prefix, and the still latent the
        estimates start from (the motion latents and the decoder's memory carry on)."""
        self.prefix, self.still = reference.lr_prefix, reference.lr_still
        self.finish.set_reference(reference)

    def set_text(self, tokens: TextTokens) -> None:
        self.text = tokens

    @torch.no_grad()
    def generate(self, seg: Segment, audio: Tensor, steps: int | None = None) -> Tensor:
        """audio windows [1, M + N, A, D] -> the segment's new LR latents [1, C, N, h, w].

        steps: Euler steps for this segment (default: the session's); the live engine lowers them
        when it must degrade.
        """
        motion = self.motion[:, :, self.motion.shape[2] - seg.motion_latents :]
        if motion.shape[2] != seg.motion_latents:
            raise ValueError(
                f"segment {seg.index} needs {seg.motion_latents} motion latents; segments run in order"
            )
        cond = LRConditions(prefix=self.prefix, motion=motion, audio=audio, text=self.text, still=self.still)
        C, (h, w) = self.config.latent_channels, self.config.lr_latent_grid
        noise = torch.randn(1, C, seg.new_latents, h, w, generator=self.generator, device=self.prefix.device)
        times = sampling_times(steps or self.steps, self.config.flow.lr_time_shift, self.prefix.device)
        velocity = self.model.velocity(cond, self.guidance, cache_context=len(times) > 2)
        with self.parts.generating():
            latents = euler_sample(velocity, noise, times)
        check_finite("LR-A2V", latents)
        fed_back = self.still + self.config.segment.motion_feedback * (latents - self.still)
        self.motion = _keep_last(self.motion, fed_back, self.config.segment.motion_latents)
        return latents

    @torch.no_grad()
    def decode(self, latents: Tensor) -> DecodedLowRes:
        """New LR latents [1, C, N, h, w] -> their LR frames and keypoints."""
        video, self.decoder = self.parts.vae.decode_stream(latents, self.decoder)
        frames = self.finish(video[0].transpose(0, 1).clamp(0, 1))  # [T, 3, h, w]
        points, _ = self.parts.pose(frames)  # [T, K, 2]
        return DecodedLowRes(latents=latents, frames=frames, keypoints=points)

    def run(self, seg: Segment, audio: Tensor, steps: int | None = None) -> DecodedLowRes:
        """generate + decode: one segment of the first stage."""
        return self.decode(self.generate(seg, audio, steps))


class RefineStage:
    """PG-Refiner + HR decode for one session: each call refines the next segment."""

    def __init__(self, parts: Parts, reference: Reference, settings: GenerationSettings) -> None:
        cfg, device = parts.config, parts.device
        self.config, self.parts = cfg, parts
        self.prefix = reference.hr_prefix
        self.text = parts.text_tokens(settings.text)
        self.times = sampling_times(settings.refiner_steps, cfg.flow.refiner_time_shift, device)
        self.sigma, self.noise_level = inference_degradation(1, cfg.degradation, str(device))
        # Its own generator: the stages may run at the same time on two threads or CUDA streams.
        self.generator = torch.Generator(device).manual_seed(settings.seed + 1)
        self.motion = self.prefix[:, :, :0]  # the last HR latents, up to segment.refiner_motion_latents
        self.decoder = _primed_decoder(parts, reference.hr_prefix)
        self.finish = _Finish(parts, lambda r: _hr_still_picture(r, cfg), reference)

    def set_reference(self, reference: Reference) -> None:
        """Refine towards another picture from the next segment (its HR prefix)."""
        self.prefix = reference.hr_prefix
        self.finish.set_reference(reference)

    def set_text(self, tokens: TextTokens) -> None:
        self.text = tokens

    @torch.no_grad()
    def run(self, low: DecodedLowRes) -> Tensor:
        """PG-Refiner guided by the degraded LR latent and the pose, then HR decode: uint8 [T, H, W, 3]."""
        cfg, parts = self.config, self.parts
        Hp, Wp = cfg.pose_size
        # The rasteriser is plain torch on the CPU (strokes in bounding boxes); its tensor is small.
        pose = pose_tensor(low.keypoints.float().cpu(), Wp, Hp)[None].to(low.latents)  # [1, 8, T, Hp, Wp]
        degraded = degrade_latent(low.latents, self.sigma, self.noise_level, self.generator)
        cond = RefinerConditions(
            prefix=self.prefix,
            motion=self.motion,
            lr=degraded,
            pose=pose,
            text=self.text,
            lr_clean=low.latents,
        )
        C, (H, W) = cfg.latent_channels, cfg.hr_latent_grid
        noise = torch.randn(
            1, C, low.latents.shape[2], H, W, generator=self.generator, device=low.latents.device
        )
        with parts.generating():
            hr_latents = euler_sample(parts.refiner.velocity(cond), noise, self.times)
        check_finite("the refiner", hr_latents)
        self.motion = _keep_last(self.motion, hr_latents, cfg.segment.refiner_motion_latents)
        video, self.decoder = parts.vae.decode_stream(hr_latents, self.decoder)  # [1, 3, T, H, W]
        return to_uint8(self.finish(video[0].transpose(0, 1).clamp(0, 1)))
