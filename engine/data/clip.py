"""One procedural clip: speech, the character speaking it, its frames and ground truth.

A clip is fully determined by (seed, seconds, resolution): the seed picks the
character, the speech and the motion. Clips are made in memory (on-the-fly
training) or written to disk by `store.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.config import TimeBase
from engine.data.identity import sample_identity
from engine.data.motion import motion_from_audio
from engine.data.render import render
from engine.data.skeleton import pose_from_motion, visibility
from engine.data.speech import speech_take
from engine.exceptions import ConfigError

MAX_PIXELS = 1920 * 1080  # per frame: refuse larger requests instead of exhausting memory


@dataclass(frozen=True)
class Clip:
    seed: int  # also the character's identity id
    audio: np.ndarray  # [frames * samples_per_frame] float32, 16 kHz mono
    frames: Tensor  # [T, 3, H, W] uint8
    points: Tensor  # [T, K, 2] canvas units (engine.pose.keypoints)
    visibility: Tensor  # [T, K] 1 inside the image
    mouth_open: Tensor  # [T] ground-truth mouth opening
    stressed: Tensor  # [T] bool stressed-syllable onsets

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def check_resolution(width: int, height: int) -> None:
    if width < 16 or height < 16 or width * height > MAX_PIXELS:
        raise ConfigError(f"resolution {width}x{height} outside 16x16 .. {MAX_PIXELS} pixels")


def make_clip(
    seed: int,
    seconds: float,
    width: int,
    height: int,
    time: TimeBase | None = None,
    speech: np.ndarray | None = None,
) -> Clip:
    """The clip of `seed`: `seconds` of speech with pauses and the character speaking it
    (`speech`: 16 kHz audio to speak instead of the seed's own, at least `seconds` long)."""
    check_resolution(width, height)
    time = time or TimeBase()
    frames = round(seconds * time.fps)
    if frames < 1:
        raise ConfigError(f"a clip needs at least one frame, got {seconds} s")
    if speech is None:
        speech = speech_take(seed, frames / time.fps, time.sample_rate)
    if len(speech) < frames * time.samples_per_frame:
        raise ConfigError(f"speech of {len(speech)} samples is shorter than {seconds} s")
    audio = speech[: frames * time.samples_per_frame]
    motion = motion_from_audio(audio, seed, time, frames)
    identity = sample_identity(seed)
    pose = pose_from_motion(identity, motion)
    image = render(identity, pose, width, height).image
    return Clip(
        seed=seed,
        audio=audio,
        frames=(image * 255).round().to(torch.uint8),
        points=pose.points,
        visibility=visibility(pose.points, width, height),
        mouth_open=motion.mouth_open,
        stressed=motion.stressed,
    )
