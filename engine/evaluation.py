"""Measuring a trained bundle: lip sync on held-out characters and speech, identity over long takes.

Lip sync: a held-out character speaks held-out speech through the live
algorithm; a reader reads the mouth opening of every generated LR frame (at the
LR size the lip keypoints are too close to measure an opening by their
spread), which is correlated with the ground truth the procedural motion
derives from the same audio, over lags of a few frames: the best correlation
and its lag are reported. The reader is the mouth judge (models/mouth_judge.py),
which no training loss reads, or the pose head's own reader; either reads
around the lips the pose head finds.

Identity: over a long take, the mean colour of three regions of every frame —
face, clothes, background, placed by the pose head's keypoints — is compared
with its mean over the first 10 s.

The lip-sync ceiling reads the same measure on the held-out characters rendered speaking the
same speech, as rendered and after the autoencoder's round trip: it says whether the generator
or the autoencoder limits lip sync.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.audio.stream import AudioFeatureStream
from engine.config import Config
from engine.data.clip import make_clip
from engine.data.motion import Motion, motion_from_audio
from engine.data.speech import speech_take
from engine.generation.segments import plan_segments
from engine.generation.stages import (
    DecodedLowRes,
    GenerationChoices,
    GenerationSettings,
    LowResStage,
    Reference,
    RefineStage,
)
from engine.media.image import fit_image
from engine.parts import Parts
from engine.pose import keypoints as kp

Reader = Callable[[Tensor, Tensor], Tensor]
"""frames [N, 3, H, W] in [0, 1], keypoints [N, K, 2] -> the mouth opening [N] each frame shows."""

HELD_OUT = 2_000_000  # characters and speech of the evaluation: seeds no training ever drew
VALIDATION_FIRST = 1_000  # held-out characters from this index on tune settings; reports use 0..
EYES = [kp.index("face", "eye_l"), kp.index("face", "eye_r")]


@torch.no_grad()
def generate(
    parts: Parts, image: Tensor, audio: np.ndarray, refine: bool = False, seed: int = 0
) -> Iterator[tuple[DecodedLowRes, Tensor | None, int]]:
    """The live algorithm over finite audio: (LR result, HR frames or None, frames to keep) per segment."""
    cfg = parts.config
    reference = Reference.encode(parts, image)
    settings = GenerationSettings.from_config(cfg, GenerationChoices(seed=seed))
    low = LowResStage(parts, reference, settings)
    refiner = RefineStage(parts, reference, settings) if refine else None
    features = AudioFeatureStream(parts.audio, cfg)
    features.push(audio)
    features.finish()
    for seg in plan_segments(len(audio), cfg):
        decoded = low.run(seg, features.windows(seg))
        frames = refiner.run(decoded) if refiner is not None else None
        yield decoded, frames, seg.output_frames


@dataclass(frozen=True)
class LipSync:
    correlation: float  # at the best lag
    lag_frames: int  # generated mouth trails the truth by this many frames (negative: leads)
    correlation_at_zero: float
    frames: int
    by_lag: dict[int, float]  # the correlation at every lag measured


def held_out_speech(cfg: Config, i: int, seconds: float) -> tuple[int, np.ndarray, Motion]:
    """Held-out character i: its seed, speech no character was trained on, and the motion it drives.
    (Characters from VALIDATION_FIRST on are for tuning settings; the reported ones start at 0.)"""
    seed = HELD_OUT + i
    audio = speech_take(seed + 500, seconds, cfg.time.sample_rate)
    frames = round(len(audio) / cfg.time.samples_per_frame)
    audio = audio[: frames * cfg.time.samples_per_frame]
    return seed, audio, motion_from_audio(audio, seed, cfg.time, frames)


def reference_picture(cfg: Config, seed: int) -> Tensor:
    """The held-out character's picture the generator starts from: uint8 [3, H, W] at the HR size."""
    return make_clip(seed, 1 / cfg.time.fps, cfg.hr.width, cfg.hr.height).frames[0]


def _standardized(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def correlate(read: list[np.ndarray], truth: list[np.ndarray], max_lag: int = 4) -> LipSync:
    """Pooled correlation of per-take standardized readings and truths, at the best lag within
    ±max_lag frames (a positive lag: the reading trails the truth)."""
    read = [_standardized(r) for r in read]
    truth = [_standardized(t[: len(r)]) for r, t in zip(read, truth, strict=True)]
    best = (-2.0, 0)
    zero = 0.0
    by_lag = {}
    for lag in range(-max_lag, max_lag + 1):
        pairs = [
            (r[lag:], t[: len(t) - lag]) if lag >= 0 else (r[:lag], t[-lag:])
            for r, t in zip(read, truth, strict=True)
        ]
        corr = float(
            np.corrcoef(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))[0, 1]
        )
        zero = corr if lag == 0 else zero
        best = max(best, (corr, lag))
        by_lag[lag] = corr
    return LipSync(
        correlation=best[0],
        lag_frames=best[1],
        correlation_at_zero=zero,
        frames=sum(map(len, read)),
        by_lag=by_lag,
    )


@torch.no_grad()
def lip_sync(
    parts: Parts,
    characters: int = 4,
    seconds: float = 8.0,
    max_lag: int = 4,
    first: int = 0,
    reader: Reader | None = None,
) -> LipSync:
    """Mouth opening seen on generated frames vs the ground truth of held-out speech, for held-out
    characters first, first + 1, ... (tune settings on VALIDATION_FIRST on, report from 0), read by
    `reader` (default: the pose head's reader)."""
    cfg = parts.config
    read = reader or parts.pose.mouth_opening
    generated, truth = [], []
    for i in range(first, first + characters):
        seed, audio, motion = held_out_speech(cfg, i, seconds)
        opening = [
            read(d.frames[:keep], d.keypoints[:keep]).float().cpu()
            for d, _, keep in generate(parts, reference_picture(cfg, seed), audio)
        ]
        generated.append(torch.cat(opening)[: motion.frames].numpy())
        truth.append(motion.mouth_open.numpy())
    return correlate(generated, truth, max_lag)


CEILING_CHUNK_LATENTS = 8  # latent frames per autoencoder pass (bounds memory at large sizes)


@torch.no_grad()
def lip_sync_ceiling(
    parts: Parts,
    characters: int = 4,
    seconds: float = 8.0,
    max_lag: int = 4,
    first: int = 0,
    reader: Reader | None = None,
) -> dict[str, LipSync]:
    """lip_sync's measure on the video the generator aims at: each held-out character rendered at
    the LR size speaking the same held-out speech, read as rendered ("rendered": how well the
    reader reads a perfect picture) and after the autoencoder's round trip, encoded after the
    generator's reference picture as the generators' latents are ("reconstructed").

    LR-A2V learns latents of the autoencoder, so its reading stays near the reconstruction's: when
    the generated reading matches "reconstructed" and "rendered" is far above both, the
    autoencoder, not the generator, is what limits lip sync. (The demo bundle, 24 characters:
    rendered 0.96, reconstructed 0.85, generated 0.81: both do.)
    """
    cfg = parts.config
    read = reader or parts.pose.mouth_opening
    lr, stride = cfg.lr, cfg.time.vae_temporal_stride
    vae, device = parts.vae, parts.device
    readings: dict[str, list[np.ndarray]] = {"rendered": [], "reconstructed": []}
    truth = []
    for i in range(first, first + characters):
        seed, audio, motion = held_out_speech(cfg, i, seconds)
        frames = motion.frames - motion.frames % stride  # whole latents after the reference
        clip = make_clip(seed, frames / cfg.time.fps, lr.width, lr.height, cfg.time, speech=audio)
        video = clip.frames.float().to(device) / 255
        picture = fit_image(reference_picture(cfg, seed), lr.width, lr.height)[None].to(device)
        whole = torch.cat([picture, video]).transpose(0, 1)[None]  # [1, 3, 1 + T, H, W]
        encoder_state, decoder_state, decoded = None, None, []
        step = CEILING_CHUNK_LATENTS * stride
        bounds = [0, *range(1 + step, whole.shape[2], step), whole.shape[2]]  # the first holds the reference
        for start, stop in itertools.pairwise(bounds):
            raw, encoder_state = vae.encoder.encode(whole[:, :, start:stop], encoder_state)
            out, decoder_state = vae.decoder.decode(raw, decoder_state)
            decoded.append(out)
        reconstruction = torch.cat(decoded, dim=2)[0, :, 1:].transpose(0, 1).clamp(0, 1)
        for name, seen in (("rendered", video), ("reconstructed", reconstruction)):
            readings[name].append(read(seen, parts.pose(seen)[0]).float().cpu().numpy())
        truth.append(clip.mouth_open.numpy())
    return {name: correlate(read, truth, max_lag) for name, read in readings.items()}


REGIONS = ("face", "clothes", "background")


def region_colours(frames: Tensor, points: Tensor) -> Tensor:
    """Mean colour [T, 3 regions, 3] of face, clothes and background of frames [T, 3, H, W] in [0, 1],
    the regions placed from keypoints [T, K, 2] (canvas units)."""
    T, _, H, W = frames.shape
    ys = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    xs = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    out = torch.zeros(T, len(REGIONS), 3)
    for i in range(T):
        p = kp.to_pixels(points[i].float(), W, H)
        eyes, nose = p[EYES], p[kp.index("face", "nose_tip")]
        radius = max(2.0, float((eyes[0] - eyes[1]).norm()) * 0.6)
        face = (xs - nose[0]) ** 2 + (ys - nose[1]) ** 2 < radius**2
        shoulders = p[[kp.index("body", "shoulder_l"), kp.index("body", "shoulder_r")]]
        chest = shoulders.mean(0) + torch.tensor([0.0, 0.12 * H])
        clothes = (xs - chest[0]).abs() < 0.6 * (shoulders[0, 0] - shoulders[1, 0]).abs() / 2 + 1
        clothes &= (ys - chest[1]).abs() < 0.08 * H
        background = (ys < 0.12 * H) & ((xs < 0.15 * W) | (xs > 0.85 * W))
        for r, mask in enumerate((face, clothes, background)):
            if mask.any():
                out[i, r] = frames[i][:, mask].mean(1)
    return out


@torch.no_grad()
def identity_drift(parts: Parts, seconds: float = 120.0, reference_s: float = 10.0, seed: int = 0) -> dict:
    """Region colours per second of a long take, and their largest deviation from the first 10 s."""
    cfg = parts.config
    character = HELD_OUT + 100 + seed
    audio = speech_take(character + 500, seconds, cfg.time.sample_rate)
    image = make_clip(character, 1 / cfg.time.fps, cfg.hr.width, cfg.hr.height).frames[0]
    colours = []
    for decoded, frames, keep in generate(parts, image, audio, refine=True):
        assert frames is not None
        hr = frames[:keep].permute(0, 3, 1, 2).float() / 255
        colours.append(region_colours(hr, decoded.keypoints[:keep].cpu()))
    per_frame = torch.cat(colours)  # [T, 3, 3]
    fps = cfg.time.fps
    per_second = per_frame[: len(per_frame) // fps * fps].view(-1, fps, len(REGIONS), 3).mean(1)
    baseline = per_frame[: round(reference_s * fps)].mean(0)
    deviation = (per_second - baseline).abs().amax(dim=-1)  # [S, 3 regions], worst channel
    return {
        "character": character,
        "seconds": seconds,
        "max_deviation": {r: float(deviation[:, i].max()) for i, r in enumerate(REGIONS)},
        "per_second": per_second.tolist(),
        "baseline": baseline.tolist(),
    }


def plot_identity(drift: dict, path: str, size: tuple[int, int] = (720, 300)) -> None:
    """A PNG of each region's colour deviation from the first seconds, second by second."""
    from PIL import Image, ImageDraw  # noqa: PLC0415  (only this plot needs drawing)

    per_second = np.asarray(drift["per_second"])  # [S, regions, 3]
    deviation = np.abs(per_second - np.asarray(drift["baseline"])[None]).max(axis=-1)  # [S, regions]
    W, H = size
    margin, top = 50, max(0.05, float(deviation.max()) * 1.1)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, 10, W - 10, H - 30], outline="black")
    colours = ((200, 60, 60), (40, 120, 200), (60, 160, 60))
    x = lambda s: margin + (W - 10 - margin) * s / max(1, len(deviation) - 1)  # noqa: E731
    y = lambda v: H - 30 - (H - 40) * v / top  # noqa: E731
    for r, name in enumerate(REGIONS):
        points = [(x(s), y(v)) for s, v in enumerate(deviation[:, r])]
        draw.line(points, fill=colours[r], width=2)
        draw.text((margin + 10 + 110 * r, 14), name, fill=colours[r])
    draw.text((4, 6), f"{top:.2f}", fill="black")
    draw.text((4, H - 40), "0", fill="black")
    draw.text(
        (margin, H - 24), f"colour deviation from the first seconds, 0 .. {len(deviation)} s", fill="black"
    )
    image.save(path)
