"""The `ihuman train` tasks of the parts trained on rendered frames alone: the video autoencoder,
the pose head and its mouth reader, the mouth judge, the audio encoder and the hand evaluator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from engine.data.hand_pairs import HandPairs
from engine.models.degradation import gaussian_blur
from engine.models.pose import pose_loss
from engine.models.vae import VideoAutoencoder
from engine.pose import keypoints as kp
from engine.randomness import rand, randn
from engine.training.task import Task
from engine.training.windows import clip_with_reference, crop_window, psnr

MOUTH_CROPS = 0.35  # share of VAE crops centred on the lips
MOUTH_WEIGHT = 4.0  # extra weight of the VAE's reconstruction error around the lips


def _crop_centre(batch: dict, width: int, height: int) -> tuple[float, float] | None:
    """The lips of the batch's first window (MOUTH_CROPS of the time) or another random visible
    keypoint, in pixels, 3 times in 4 in all; else None.

    Most of a frame is a smooth background: crops drawn uniformly rarely hold the
    person, and the autoencoder would learn their colours and edges last. The mouth
    is a few pixels at the LR size, and lip sync depends on them.
    """
    draw = float(torch.rand(()))
    if "points" not in batch or draw < 0.25:
        return None
    visible = batch["visibility"][0, 0] > 0.5  # [K]
    if draw < 0.25 + MOUTH_CROPS and visible[kp.LIPS].all():
        x, y = kp.to_pixels(batch["points"][0, 0, kp.LIPS].mean(0), width, height).tolist()
        return x, y
    if not visible.any():
        return None
    choices = visible.nonzero().flatten()
    k = int(choices[torch.randint(0, len(choices), ())])
    x, y = kp.to_pixels(batch["points"][0, 0, k], width, height).tolist()
    return x, y


def _mouth_weight(
    batch: dict, frame: tuple[int, int], corner: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """[B, 1, T, h, w]: 1 + MOUTH_WEIGHT in a box around each frame's lips (as wide as the eyes are
    apart), 1 elsewhere, over the window `size` at `corner` (top, left) of a W x H frame."""
    points = batch["points"]  # [B, T, K, 2]
    W, H = frame
    pixels = kp.to_pixels(points, W, H)
    centre = pixels[:, :, kp.LIPS].mean(2)  # [B, T, 2]
    eyes = pixels[:, :, kp.index("face", "eye_l")] - pixels[:, :, kp.index("face", "eye_r")]
    half = eyes.norm(dim=-1).clamp_min(1.0)[..., None, None] / 2  # [B, T, 1, 1]
    ys = torch.arange(size[0], dtype=torch.float32, device=points.device) + corner[0] + 0.5
    xs = torch.arange(size[1], dtype=torch.float32, device=points.device) + corner[1] + 0.5
    inside = ((ys[:, None] - centre[..., 1, None, None]).abs() < half) & (
        (xs[None, :] - centre[..., 0, None, None]).abs() < half
    )
    return (1 + MOUTH_WEIGHT * inside.float())[:, None]


@dataclass
class VAETask(Task):
    """Reconstruction (L1 + MSE). The autoencoder is fully convolutional, so it trains on random
    crops (`crop` pixels, much cheaper on a CPU) and is evaluated on whole held-out frames.

    half_scale: the share of batches shrunk to half size first, so one autoencoder serves a preset's
    LR and HR videos (the person is half as large in LR pixels)."""

    crop: int | None = None
    half_scale: float = 0.0

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        frames = batch["frames"]  # [B, T, 3, H, W]
        scale = 1.0
        if self.half_scale and torch.rand(()) < self.half_scale:
            B, T, _, H, W = frames.shape
            stride = self.model.config.time.vae_spatial_stride
            size = (H // 2 // stride * stride, W // 2 // stride * stride)
            frames = F.interpolate(frames.flatten(0, 1), size=size, mode="bilinear", antialias=True)
            frames = frames.view(B, T, 3, *size)
            scale = 0.5
        frames = frames.transpose(1, 2)  # [B, 3, T, H, W]
        H, W = frames.shape[-2:]
        corner = (0, 0)
        if self.crop:
            centre = _crop_centre(batch, W / scale, H / scale)
            centre = None if centre is None else (centre[0] * scale, centre[1] * scale)
            frames, corner = crop_window(frames, self.crop, self.model.config.time.vae_spatial_stride, centre)
        recon = self.model(frames)
        error = (recon - frames).abs() + (recon - frames).pow(2)
        weight = _mouth_weight(batch, (W, H), corner, frames.shape[-2:]) if "points" in batch else None
        loss = error.mean() if weight is None else (error * weight).mean() / weight.mean()
        return loss, {"psnr": psnr(recon.detach(), frames)}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        values = [psnr(self.model(b["frames"].transpose(1, 2)), b["frames"].transpose(1, 2)) for b in batches]
        self.model.train()
        return {"held_out_psnr_db": sum(values) / len(values)}


class PoseTask(Task):
    def _run(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        frames = batch["frames"].flatten(0, 1)  # [B*T, 3, H, W]
        points, visible, heatmaps = self.model.predict(frames)
        return points, visible, batch["points"].flatten(0, 1), batch["visibility"].flatten(0, 1), heatmaps

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        points, visible, target, visibility, heatmaps = self._run(batch)
        size = (self.spec.width, self.spec.height)
        return pose_loss(points, visible, target, visibility, heatmaps, size)

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        """Mean keypoint error in LR pixels over visible keypoints, overall and for the lips."""
        self.model.eval()
        errors, lips = [], []
        for b in batches:
            points, _, target, visibility, _ = self._run(b)
            distance = (points - target).norm(dim=-1) * self.spec.height  # canvas units -> pixels
            mask = visibility > 0.5
            errors.append(float(distance[mask].mean()))
            lips.append(float(distance[:, kp.LIPS][mask[:, kp.LIPS]].mean()))
        self.model.train()
        return {
            "held_out_error_px": sum(errors) / len(errors),
            "held_out_mouth_error_px": sum(lips) / len(lips),
        }


MOUTH_JITTER_PX = 1.5  # LR pixels: the head's lip centre is ~1 px off on held-out frames, 2.3 at most
MOUTH_JITTER_SCALE = 0.2  # its eye distance up to 20 % off


def jitter_mouth(points: Tensor, height: int, generator: torch.Generator | None = None) -> Tensor:
    """Keypoints [N, K, 2] (canvas units) shifted and scaled about the lips by a random error
    of the size the pose head makes, so the reader learns to read crops placed like its own."""
    n, device = points.shape[0], points.device
    centre = points[:, kp.LIPS].mean(1, keepdim=True)
    shift = (rand((n, 1, 2), generator=generator, device=device) * 2 - 1) * MOUTH_JITTER_PX / height
    scale = 1 + (rand((n, 1, 1), generator=generator, device=device) * 2 - 1) * MOUTH_JITTER_SCALE
    return (points - centre) * scale + centre + shift


RECONSTRUCTED_RATE = 0.5  # share of mouth-reader batches read from autoencoder reconstructions


@dataclass
class MouthTask(Task):
    """The pose head's mouth reader, on the bundle's trained head (frozen but for the reader):
    L1 between the opening it reads and the ground truth. Training crops are placed by the true
    keypoints, jittered as the head errs; evaluation crops by the head's own keypoints.

    In the engine the head reads decoded LR frames, whose mouths the autoencoder softens: a
    reader trained on real frames alone reads the demo autoencoder's reconstructions at a third
    of their opening (mean 0.13 against 0.47 true). With the bundle's trained autoencoder, a share
    of the batches are its reconstructions (the window encoded after its reference, as the
    generators' latents are), so the reader learns to read what it will be shown.
    """

    vae: VideoAutoencoder | None = None

    def frozen(self) -> list[nn.Module]:
        return [] if self.vae is None else [self.vae]

    @torch.no_grad()
    def reconstruct(self, batch: dict) -> Tensor:
        """The window's frames [B, T, 3, H, W] as the bundle's autoencoder reproduces them."""
        assert self.vae is not None
        frames = batch["frames"]
        video = self.vae(clip_with_reference(batch["reference"], frames))[:, :, 1:]
        return video.transpose(1, 2).clamp(0, 1)

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        frames = batch["frames"]
        if self.vae is not None and torch.rand(()) < RECONSTRUCTED_RATE:
            frames = self.reconstruct(batch)
        points = jitter_mouth(batch["points"].flatten(0, 1), self.spec.height)
        read = self.model.mouth_opening(frames.flatten(0, 1), points)
        return F.l1_loss(read, batch["mouth_open"].flatten()), {}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        """Correlation and mean error of the opening read from held-out frames (and from their
        reconstructions, with an autoencoder)."""
        self.model.eval()
        truth = torch.cat([b["mouth_open"].flatten() for b in batches])
        sources = {"": [b["frames"] for b in batches]}
        if self.vae is not None:
            sources["_reconstructed"] = [self.reconstruct(b) for b in batches]
        result = {}
        for suffix, frames in sources.items():
            read = torch.cat([self.model.mouth_opening(f.flatten(0, 1)) for f in frames])
            result[f"held_out_mouth_corr{suffix}"] = float(torch.corrcoef(torch.stack((read, truth)))[0, 1])
            result[f"held_out_mouth_l1{suffix}"] = float((read - truth).abs().mean())
        self.model.train()
        return result


JUDGE_BLUR_MAX = 1.5  # LR pixels: the judge also reads frames blurred by up to this (generated ones are soft)
JUDGE_NOISE_MAX = 0.04  # and noised by up to this std
JUDGE_JITTER = 0.25  # brightness and contrast changes of up to this share, per frame and channel


def photometric_jitter(frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rendered frames [N, 3, H, W] as a generator might show them: a per-frame Gaussian blur of
    0..JUDGE_BLUR_MAX pixels, colour gain and offset per channel, and noise."""
    n, device = frames.shape[0], frames.device
    sigma = rand((n,), generator=generator, device=device) * JUDGE_BLUR_MAX
    blurred = gaussian_blur(frames[:, :, None], sigma)[:, :, 0]
    u = rand((3, n, 3, 1, 1), generator=generator, device=device) * 2 - 1
    gain, offset = 1 + JUDGE_JITTER * u[0], JUDGE_JITTER / 2 * u[1]
    noise = u[2].abs() * JUDGE_NOISE_MAX * randn(frames.shape, generator=generator, device=device)
    return (blurred * gain + offset + noise).clamp(0, 1)


class MouthJudgeTask(Task):
    """The mouth judge (models/mouth_judge.py) on rendered frames only: L1 to the true opening, crops
    at the true lips jittered as the pose head errs (the evaluations place them with its keypoints),
    frames jittered photometrically. Evaluated on held-out rendered frames, as they are and jittered."""

    def _read(self, batch: dict, jitter: bool, generator: torch.Generator | None = None) -> Tensor:
        frames = batch["frames"].flatten(0, 1)
        if jitter:
            frames = photometric_jitter(frames, generator)
        points = jitter_mouth(batch["points"].flatten(0, 1), self.spec.height, generator)
        return self.model.read(frames, points)

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        return F.l1_loss(self._read(batch, jitter=True), batch["mouth_open"].flatten()), {}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        truth = torch.cat([b["mouth_open"].flatten() for b in batches])
        result = {}
        for suffix, jitter in (("", False), ("_jittered", True)):
            read = torch.cat([self._read(b, jitter, g) for b in batches])
            # A constant reading (untrained) or truth (silence) correlates with nothing: 0, not nan.
            varied = read.std() > 0 and truth.std() > 0
            corr = torch.corrcoef(torch.stack((read, truth)))[0, 1] if varied else torch.zeros(())
            result[f"held_out_mouth_corr{suffix}"] = float(corr)
            result[f"held_out_mouth_l1{suffix}"] = float((read - truth).abs().mean())
        self.model.train()
        return result


class AudioTask(Task):
    """Pretext: predict the ground-truth mouth opening of each frame from the audio alone."""

    def _predict(self, batch: dict) -> Tensor:
        feats = self.model.encode_audio(batch["audio"])  # [B, T, D]
        return self.extra["mouth"](feats).squeeze(-1)

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        loss = F.mse_loss(self._predict(batch), batch["mouth_open"])
        return loss, {}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        pred = torch.cat([self._predict(b).flatten() for b in batches])
        target = torch.cat([b["mouth_open"].flatten() for b in batches])
        return {"held_out_mouth_corr": float(torch.corrcoef(torch.stack((pred, target)))[0, 1])}


class HandEvaluatorTask(Task):
    """Good/broken hand pairs (engine/data/hand_pairs.py) at the LR size; BCE on both crops of a pair."""

    pairs_per_character = 6

    def stream(self, seeds: Sequence[int], batch: int, workers: int) -> Iterable[dict]:
        crop = self.model.crop  # type: ignore[attr-defined]
        pairs = HandPairs(seeds, self.pairs_per_character, self.spec.width, self.spec.height, crop)
        return DataLoader(pairs, batch_size=max(1, batch // 2), num_workers=workers)

    def _logits(self, batch: dict) -> tuple[Tensor, Tensor]:
        return self.model(batch["good"]), self.model(batch["bad"])

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        good, bad = self._logits(batch)
        loss = F.binary_cross_entropy_with_logits(
            good, torch.ones_like(good)
        ) + F.binary_cross_entropy_with_logits(bad, torch.zeros_like(bad))
        return loss, {"pair_accuracy": float((good > bad).float().mean())}

    @torch.no_grad()
    def evaluate(self, batches: list[dict]) -> dict[str, float]:
        self.model.eval()
        scored = [self._logits(b) for b in batches]
        self.model.train()
        good = torch.cat([g for g, _ in scored])
        bad = torch.cat([b for _, b in scored])
        return {
            "held_out_pair_accuracy": float((good > bad).float().mean()),
            "held_out_accuracy": float(torch.cat([good > 0, bad < 0]).float().mean()),
            "held_out_pairs": float(len(good)),
        }
