"""Motion driven by audio: per video frame, what the face, head, arms and hands do.

Deterministic given (audio, seed), so a model can learn the mapping and a
metric can check it:

- mouth opening from the loudness envelope (exactly 0 in silence), width and
  rounding from the spectral centroid (low centroid ~ rounded "o/u", high ~
  spread "ee/s");
- stressed syllables = loudness peaks that stand out from their neighbourhood;
  head nods and gesture onsets follow them, head tilt follows slow prosody;
- blinks, breathing and idle sway from the seed, during speech and silence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from engine.config import TimeBase

SILENCE_DB = -45.0  # frames quieter than this (dBFS RMS) are silence: mouth closed
FULL_OPEN_DB = -15.0  # loudness at which the mouth is fully open
GESTURES = ("wave", "point", "count", "open", "close")
FINGERS = 5

# Finger curls (thumb, index, middle, ring, pinky): 0 straight, 1 fully curled.
REST_CURL = (0.35, 0.3, 0.35, 0.4, 0.45)
OPEN_CURL = (0.0, 0.0, 0.0, 0.0, 0.0)
FIST_CURL = (0.9, 1.0, 1.0, 1.0, 1.0)
POINT_CURL = (0.8, 0.0, 1.0, 1.0, 1.0)
REST_ANGLE = 2.9  # rest hands hang down, fingers slightly inward


@dataclass(frozen=True)
class AudioFeatures:
    """Per-video-frame audio descriptors: loudness_db, centroid_hz, silent [T]."""

    loudness_db: np.ndarray
    centroid_hz: np.ndarray
    silent: np.ndarray


@dataclass(frozen=True)
class Motion:
    """Per-frame motion parameters [T] (or [T, k]); the skeleton turns them into keypoints."""

    mouth_open: Tensor  # [T] 0 closed .. 1 fully open
    mouth_width: Tensor  # [T] -1 narrow .. 1 wide
    mouth_round: Tensor  # [T] 0 .. 1 (rounded lips)
    head_pitch: Tensor  # [T] nod, canvas units the face moves down
    head_roll: Tensor  # [T] tilt, radians
    sway: Tensor  # [T] body x offset, canvas units
    breath: Tensor  # [T] 0 .. 1, shoulders rise
    blink: Tensor  # [T] 0 open .. 1 closed
    brow_raise: Tensor  # [T] 0 .. 1
    wrist: Tensor  # [T, 2, 2] wrist targets (left, right), relative to the shoulder, in arm lengths
    hand_angle: Tensor  # [T, 2] finger direction in radians: 0 up, pi/2 outward, pi down
    curls: Tensor  # [T, 2, 5] finger curls per hand
    stressed: Tensor  # [T] bool, stressed-syllable onsets (for metrics)

    @property
    def frames(self) -> int:
        return self.mouth_open.shape[0]

    def slice(self, start: int, stop: int) -> Motion:
        return Motion(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})


def audio_features(audio: np.ndarray, time: TimeBase, frames: int | None = None) -> AudioFeatures:
    """Loudness and spectral centroid per video frame of 16 kHz mono audio in [-1, 1]."""
    hop = time.samples_per_frame
    frames = frames if frames is not None else len(audio) // hop
    window = 2 * hop
    padded = np.pad(audio.astype(np.float64), (hop // 2, window))
    starts = np.arange(frames) * hop
    chunks = np.stack([padded[s : s + window] for s in starts]) if frames else np.zeros((0, window))
    rms = np.sqrt(np.mean(chunks**2, axis=1) + 1e-12)
    loudness = 20 * np.log10(rms + 1e-9)
    spectrum = np.abs(np.fft.rfft(chunks * np.hanning(window), axis=1))
    freqs = np.fft.rfftfreq(window, 1.0 / time.sample_rate)
    centroid = (spectrum * freqs).sum(axis=1) / (spectrum.sum(axis=1) + 1e-9)
    return AudioFeatures(loudness, centroid, loudness < SILENCE_DB)


def _smooth(x: np.ndarray, attack: float, release: float) -> np.ndarray:
    """One-pole follower with separate rise and fall rates (per frame)."""
    out = np.zeros_like(x)
    level = 0.0
    for i, v in enumerate(x):
        rate = attack if v > level else release
        level += rate * (v - level)
        out[i] = level
    return out


def _bump(frames: int, centers: list[int], width: float) -> np.ndarray:
    t = np.arange(frames)[:, None]
    c = np.asarray(centers, dtype=np.float64)[None, :]
    return np.exp(-0.5 * ((t - c) / width) ** 2).sum(axis=1) if centers else np.zeros(frames)


def stressed_onsets(loudness_db: np.ndarray, silent: np.ndarray, fps: int) -> np.ndarray:
    """Frames that are local loudness maxima standing >= 4 dB above their half-second neighbourhood."""
    n = len(loudness_db)
    half = fps // 2
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        if silent[i]:
            continue
        lo, hi = max(0, i - half), min(n, i + half + 1)
        local = loudness_db[max(0, i - 3) : min(n, i + 4)]
        if loudness_db[i] >= local.max() and loudness_db[i] >= np.mean(loudness_db[lo:hi]) + 4.0:
            out[i] = True
    return out


def _gesture_pose(kind: str, count: int) -> tuple[tuple[float, float], tuple[float, ...], float]:
    """(wrist target relative to the shoulder in arm lengths, finger curls, hand angle)."""
    if kind == "wave":
        return (0.35, -0.75), OPEN_CURL, 0.1
    if kind == "point":
        return (0.6, -0.3), POINT_CURL, 1.4
    if kind == "count":  # index, middle, ring, pinky extended in order, the thumb as the fifth
        fingers = tuple(0.0 if i < count else 1.0 for i in range(4))
        return (0.25, -0.55), (0.0 if count == 5 else 0.9, *fingers), 0.0
    if kind == "open":
        return (0.45, 0.05), OPEN_CURL, 0.9
    return (0.3, 0.1), FIST_CURL, 0.6  # close


def _blinks(n: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Blink closure per frame: a five-frame blink every 2 .. 5 s."""
    blink = np.zeros(n)
    shape = np.array([0.5, 1.0, 1.0, 0.6, 0.2])
    next_blink = rng.uniform(0.5, 3.0)
    while next_blink * fps < n:
        start = int(next_blink * fps)
        end = min(n, start + len(shape))
        blink[start:end] = np.maximum(blink[start:end], shape[: end - start])
        next_blink += rng.uniform(2.0, 5.0)
    return blink


def _gestures(
    n: int, fps: int, peaks: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rest pose and gestures begun on stressed syllables.

    Returns wrist targets [n, 2, 2], finger curls [n, 2, 5] and hand angles [n, 2].
    """
    rest_wrist = np.array([[0.15, 0.8], [0.15, 0.8]])  # (out, down) from the shoulder, in arm lengths
    wrist = np.broadcast_to(rest_wrist, (n, 2, 2)).copy()
    curls = np.broadcast_to(np.array([REST_CURL, REST_CURL]), (n, 2, FINGERS)).copy()
    hand_angle = np.full((n, 2), REST_ANGLE)
    frames = np.arange(n)
    busy_until = -1
    hold, ramp = int(0.9 * fps), int(0.3 * fps)
    for p in peaks:
        if p <= busy_until or rng.random() > 0.6:
            continue
        kind = GESTURES[rng.integers(len(GESTURES))]
        hand = int(rng.integers(2))
        target, target_curl, angle = _gesture_pose(kind, int(rng.integers(1, 6)))
        env = np.clip(np.minimum((frames - p) / ramp, (p + hold + 2 * ramp - frames) / ramp), 0, 1)
        env = env * env * (3 - 2 * env)  # smoothstep in and out
        wobble = 0.35 * np.sin(2 * np.pi * 2.0 * (frames - p) / fps) if kind == "wave" else 0.0
        wrist[:, hand] += env[:, None] * (np.array(target) - wrist[:, hand])
        curls[:, hand] += env[:, None] * (np.array(target_curl) - curls[:, hand])
        hand_angle[:, hand] += env * (angle + wobble - hand_angle[:, hand])
        busy_until = p + hold + 2 * ramp
    return wrist, np.clip(curls, 0.0, 1.0), hand_angle


def motion_from_audio(audio: np.ndarray, seed: int, time: TimeBase, frames: int | None = None) -> Motion:
    """The motion of a character (seed) speaking `audio` (16 kHz mono float)."""
    rng = np.random.default_rng(seed)
    feats = audio_features(audio, time, frames)
    n, fps = len(feats.loudness_db), time.fps
    t = np.arange(n) / fps

    # Mouth: loudness -> opening, gated to exactly 0 in silence; viseme shape from the centroid.
    level = np.clip((feats.loudness_db - SILENCE_DB) / (FULL_OPEN_DB - SILENCE_DB), 0.0, 1.0)
    mouth_open = _smooth(level, attack=0.8, release=0.55)
    mouth_open[feats.silent] = 0.0
    speaking = ~feats.silent
    centroid = feats.centroid_hz
    mouth_round = _smooth(np.where(speaking, np.clip((1800.0 - centroid) / 1200.0, 0.0, 1.0), 0.0), 0.6, 0.5)
    mouth_width = _smooth(np.where(speaking, np.clip((centroid - 1800.0) / 1800.0, -1.0, 1.0), 0.0), 0.6, 0.5)

    # Head: nods at stressed syllables, tilt from slow prosody and the seed.
    stressed = stressed_onsets(feats.loudness_db, feats.silent, fps)
    peaks = [int(p) for p in np.flatnonzero(stressed)]
    head_pitch = rng.uniform(0.006, 0.014) * _bump(n, [p + 2 for p in peaks], 2.0)
    prosody = _smooth(np.where(speaking, level, 0.0), 0.05, 0.05)
    roll_phase, roll_freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.25)
    head_roll = 0.05 * np.sin(2 * np.pi * roll_freq * t + roll_phase) + 0.06 * (prosody - 0.3)
    brow_raise = np.clip(_bump(n, peaks, 3.0), 0.0, 1.0) * rng.uniform(0.5, 1.0)

    # Idle: breathing and sway (always), blinks every few seconds; then the hands.
    breath = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 0.3) * t + rng.uniform(0, 2 * np.pi))
    sway = 0.01 * np.sin(2 * np.pi * rng.uniform(0.05, 0.12) * t + rng.uniform(0, 2 * np.pi))
    blink = _blinks(n, fps, rng)
    wrist, curls, hand_angle = _gestures(n, fps, peaks, rng)

    def f(x: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    return Motion(
        mouth_open=f(mouth_open),
        mouth_width=f(mouth_width),
        mouth_round=f(mouth_round),
        head_pitch=f(head_pitch),
        head_roll=f(head_roll),
        sway=f(sway),
        breath=f(breath),
        blink=f(blink),
        brow_raise=f(brow_raise),
        wrist=f(wrist),
        hand_angle=f(hand_angle),
        curls=f(curls),
        stressed=torch.from_numpy(stressed),
    )
