"""Judges of the picture that no training loss reads: fidelity to the procedural ground truth, and
temporal smoothness across latent frames.

Fidelity: a held-out character speaks held-out speech through the live algorithm; its generated
LR and HR frames are compared with the frames the procedural renderer draws for the same character
speaking the same speech (the ground truth), over the whole frame (PSNR, SSIM) and in a box around
the lips (mean absolute error and PSNR), placed by the ground-truth keypoints. Beside each number
stands the **still-reference baseline**: the reference picture held still for the whole take. A
generator that does not beat it has learnt nothing a photograph does not already show.

Real photos (no ground truth): the share of output frames in which the face detector finds a face,
SSIM against the framed reference outside the mouth, and how much more the mouth moves in speech
than in silence.

Smoothness: the mean absolute change between consecutive frames where a new latent frame starts
(every 4 video frames) against inside latent frames. A decoder fed latents that do not join shows a
jump every 160 ms (the boundary/inner ratio far above 1); the ground truth's own ratio is reported
beside it, since real motion is not uniform either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import Tensor

from engine.data.clip import make_clip
from engine.evaluation import generate, held_out_speech, reference_picture
from engine.media.framing import FACE_BOX_HEIGHT, FaceBox, detect_faces, framer
from engine.media.image import cover, fit_image, read_image
from engine.parts import Parts
from engine.pose import keypoints as kp

MOUTH_BOX_EYES = 1.5  # side of the mouth box in eye distances (the lips with a little chin and cheek)


@dataclass(frozen=True)
class Fidelity:
    psnr_db: float  # whole frame, mean over frames
    ssim: float  # whole frame, mean over frames
    mouth_l1: float  # mean absolute error in the mouth box (0..1 scale)
    mouth_psnr_db: float


@dataclass(frozen=True)
class Smoothness:
    boundary_change: float  # mean |frame t - frame t-1| where t starts a latent frame (0..1 scale)
    inner_change: float  # the same inside latent frames
    ratio: float  # boundary / inner


def _psnr(mse: Tensor) -> Tensor:
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def mouth_boxes(points: Tensor, width: int, height: int) -> Tensor:
    """Boolean masks [T, height, width] of a square around the lips of keypoints [T, K, 2]."""
    pixels = kp.to_pixels(points.float(), width, height)
    centre = pixels[:, kp.LIPS].mean(1)  # [T, 2]
    eyes = (pixels[:, kp.index("face", "eye_l")] - pixels[:, kp.index("face", "eye_r")]).norm(dim=-1)
    half = (eyes * MOUTH_BOX_EYES / 2).clamp_min(2.0)[:, None, None]
    ys = torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    return ((ys - centre[:, 1, None, None]).abs() < half) & ((xs - centre[:, 0, None, None]).abs() < half)


def fidelity(frames: Tensor, truth: Tensor, points: Tensor) -> Fidelity:
    """frames, truth float [T, 3, H, W] in [0, 1]; points [T, K, 2] the truth's keypoints."""
    mse = (frames - truth).pow(2).mean((1, 2, 3))
    box = mouth_boxes(points, frames.shape[-1], frames.shape[-2])[:, None].expand_as(frames)
    mouth_error = (frames - truth).abs()[box]
    return Fidelity(
        psnr_db=float(_psnr(mse).mean()),
        ssim=float(ssim(frames, truth, data_range=1.0, size_average=False).mean()),
        mouth_l1=float(mouth_error.mean()),
        mouth_psnr_db=float(_psnr(mouth_error.pow(2).mean())),
    )


def smoothness(frames: Tensor, stride: int) -> Smoothness:
    """Frame-to-frame change of frames [T, 3, H, W] whose latent frames start at 0, stride, 2 stride."""
    change = (frames[1:] - frames[:-1]).abs().mean((1, 2, 3))  # change[i]: frame i -> i + 1
    starts = (torch.arange(1, frames.shape[0]) % stride) == 0
    boundary, inner = float(change[starts].mean()), float(change[~starts].mean())
    return Smoothness(boundary, inner, boundary / max(inner, 1e-9))


def _mean(items: list[dict]) -> dict:
    return {k: sum(d[k] for d in items) / len(items) for k in items[0]}


@torch.no_grad()
def judge(parts: Parts, characters: int = 4, seconds: float = 8.0, first: int = 0) -> dict:
    """Fidelity of the generated LR and HR frames and of the still-reference baseline, and the
    smoothness of both, on held-out characters first .. first + characters - 1 (mean over them)."""
    cfg = parts.config
    sizes = {"lr": (cfg.lr.width, cfg.lr.height), "hr": (cfg.hr.width, cfg.hr.height)}
    rows: dict[str, list[dict]] = {f"{who}_{res}": [] for who in ("generated", "still") for res in sizes}
    smooth: dict[str, list[dict]] = {"generated_lr": [], "generated_hr": [], "truth_hr": []}
    for i in range(first, first + characters):
        seed, audio, motion = held_out_speech(cfg, i, seconds)
        picture = reference_picture(cfg, seed)
        lr_frames, hr_frames = [], []
        for decoded, frames, keep in generate(parts, picture, audio, refine=True):
            assert frames is not None
            lr_frames.append(decoded.frames[:keep].cpu())
            hr_frames.append(frames[:keep].permute(0, 3, 1, 2).float() / 255)
        generated = {"lr": torch.cat(lr_frames), "hr": torch.cat(hr_frames)}
        count = min(motion.frames, *(len(v) for v in generated.values()))
        clip = make_clip(seed, count / cfg.time.fps, cfg.hr.width, cfg.hr.height, cfg.time, speech=audio)
        truth_hr = clip.frames.float() / 255
        truth = {"hr": truth_hr, "lr": cover(truth_hr, *sizes["lr"]).clamp(0, 1)}
        for res, (w, h) in sizes.items():
            still = fit_image(picture, w, h)[None].expand(count, -1, -1, -1)
            rows[f"generated_{res}"].append(asdict(fidelity(generated[res][:count], truth[res], clip.points)))
            rows[f"still_{res}"].append(asdict(fidelity(still, truth[res], clip.points)))
        stride = cfg.time.vae_temporal_stride
        smooth["generated_lr"].append(asdict(smoothness(generated["lr"][:count], stride)))
        smooth["generated_hr"].append(asdict(smoothness(generated["hr"][:count], stride)))
        smooth["truth_hr"].append(asdict(smoothness(truth_hr, stride)))
    report = {name: _mean(items) for name, items in rows.items()}
    for res in sizes:
        g, s = report[f"generated_{res}"], report[f"still_{res}"]
        report[f"gain_{res}"] = {
            "psnr_db": g["psnr_db"] - s["psnr_db"],
            "mouth_error_reduction": 1 - g["mouth_l1"] / s["mouth_l1"],
        }
    report["smoothness"] = {name: _mean(items) for name, items in smooth.items()}
    report["characters"], report["seconds"], report["first_character"] = characters, seconds, first
    return report


PHOTO_SPEECH_OPEN = 0.1  # ground-truth mouth opening above which a frame counts as speech
JUDGE_FACE_PX = 100  # the face detector looks at frames enlarged until a framed face is this tall


def _face_mouth_box(face: FaceBox, width: int, height: int) -> Tensor:
    """A boolean mask [height, width] around where a frontal-face box has the mouth (the lower
    third, the middle half of its width), with a margin."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    cx = face.left + face.width / 2
    rows = (ys > face.top + 0.6 * face.height) & (ys < face.top + 1.05 * face.height)
    return rows & ((xs - cx).abs() < 0.3 * face.width)


@torch.no_grad()
def photo_judge(parts: Parts, photos: list, seconds: float = 8.0, face_check: bool = True) -> dict:
    """Each photo (paths) speaks held-out speech; on its HR frames: the share in which the face
    detector finds a face, SSIM against the framed reference outside the mouth, and the mean
    frame-to-frame change in the mouth box in speech against silence (the speech's ground-truth
    mouth opening says which frames are speech)."""
    cfg = parts.config
    W, H = cfg.hr.width, cfg.hr.height
    _, audio, motion = held_out_speech(cfg, 0, seconds)
    speaking = motion.mouth_open > PHOTO_SPEECH_OPEN
    rows = {}
    for path in photos:
        picture = framer(cfg, face_check, str(path))(read_image(path))
        frames = torch.cat(
            [
                f[:keep].permute(0, 3, 1, 2).float() / 255
                for _, f, keep in generate(parts, picture, audio, True)
            ]
        )[: motion.frames]
        reference = fit_image(picture, W, H)
        faces = detect_faces((reference * 255).round().byte())
        # Faces are looked for at a size where the cascade is at ease (a face box about 100 px;
        # at the tiny HR size it is 37 px), as a viewer would look at the picture, enlarged.
        zoom = max(1.0, JUDGE_FACE_PX / (FACE_BOX_HEIGHT * H))
        enlarged = F.interpolate(frames, scale_factor=zoom, mode="bicubic").clamp(0, 1)
        found = sum(bool(detect_faces((f * 255).round().byte())) for f in enlarged) / len(frames)
        mouth = _face_mouth_box(faces[0], W, H) if faces else torch.zeros(H, W, dtype=torch.bool)
        outside = (~mouth).float()[None, None]
        still = reference[None].expand_as(frames)
        similarity = ssim(frames * outside, still * outside, data_range=1.0, size_average=False).mean()
        change = (frames[1:] - frames[:-1]).abs().mean(1)[:, mouth].mean(1) if faces else torch.zeros(1)
        talking = speaking[1 : len(frames)]
        in_speech, in_silence = float(change[talking].mean()), float(change[~talking].mean())
        rows[Path(path).name] = {
            "face_found": found,
            "ssim_outside_mouth": float(similarity),
            "mouth_change_speech": in_speech,
            "mouth_change_silence": in_silence,
            "speech_over_silence": in_speech / max(in_silence, 1e-9),
        }
    return {"photos": rows, "seconds": seconds}
