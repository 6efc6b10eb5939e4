"""Clips on disk: one folder per clip, written atomically, so an interrupted run resumes.

    DIR/clip_000042/
        video.mkv                  H.264 4:4:4, CRF 12 (visually lossless), 25 fps
        audio.wav                  16 kHz mono PCM16, exactly frames * 640 samples
        annotations.safetensors    points [T, K, 2], visibility [T, K], mouth_open [T], stressed [T]
        meta.json                  seed (= identity id), sizes, rates, format version

A clip folder is complete once it has its final name: it is written as
`clip_000042.partial/` and renamed at the end.
"""

from __future__ import annotations

import json
import shutil
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from engine.data.clip import Clip
from engine.exceptions import EngineError

FORMAT_VERSION = 1
VIDEO_OPTIONS = {"crf": "12", "preset": "veryfast"}


class DataError(EngineError):
    """A clip folder is missing, incomplete or of an unknown format."""


def clip_dir(root: Path, seed: int) -> Path:
    return root / f"clip_{seed:06d}"


def is_complete(root: Path, seed: int) -> bool:
    return (clip_dir(root, seed) / "meta.json").is_file()


def write_clip(clip: Clip, root: Path, fps: int, sample_rate: int) -> Path:
    """Write `clip` under root (atomically); returns its folder."""
    final = clip_dir(root, clip.seed)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    T, _, H, W = clip.frames.shape
    with av.open(str(partial / "video.mkv"), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options=VIDEO_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        for image in clip.frames.permute(0, 2, 3, 1).numpy():
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
            )
        container.mux(stream.encode(None))
    with wave.open(str(partial / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((np.clip(clip.audio, -1, 1) * 32767).round().astype("<i2").tobytes())
    save_file(
        {
            "points": clip.points.contiguous(),
            "visibility": clip.visibility.contiguous(),
            "mouth_open": clip.mouth_open.contiguous(),
            "stressed": clip.stressed.to(torch.uint8).contiguous(),
        },
        str(partial / "annotations.safetensors"),
    )
    meta = {
        "version": FORMAT_VERSION,
        "seed": clip.seed,
        "identity": clip.seed,
        "frames": T,
        "width": W,
        "height": H,
        "fps": fps,
        "sample_rate": sample_rate,
        "samples": len(clip.audio),
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    return final


@dataclass(frozen=True)
class StoredClip:
    """A clip read back from disk (frames decoded to uint8 RGB)."""

    meta: dict
    frames: Tensor  # [T, 3, H, W] uint8
    audio: np.ndarray  # [S] float32
    points: Tensor
    visibility: Tensor
    mouth_open: Tensor


def read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        raise DataError(f"{folder}: not a complete clip (no meta.json)")
    meta = json.loads(path.read_text())
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(f"{folder}: clip format version {meta.get('version')}, expected {FORMAT_VERSION}")
    return meta


def read_clip(folder: Path) -> StoredClip:
    meta = read_meta(folder)
    with av.open(str(folder / "video.mkv")) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    with wave.open(str(folder / "audio.wav"), "rb") as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32767
    ann = load_file(str(folder / "annotations.safetensors"))
    if frames.shape[0] != meta["frames"] or len(audio) != meta["samples"]:
        raise DataError(f"{folder}: {frames.shape[0]} frames / {len(audio)} samples, meta says otherwise")
    return StoredClip(meta, frames, audio, ann["points"], ann["visibility"], ann["mouth_open"])


def list_clips(root: Path) -> list[Path]:
    """Complete clip folders under root, in seed order."""
    return sorted(p for p in root.glob("clip_*") if p.is_dir() and not p.name.endswith(".partial"))
