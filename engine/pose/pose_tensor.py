"""Rasterise keypoints into the 8-channel pixel-level pose tensor P (docs/design.md; the refiner's guide).

Channels (7 body + 1 background, strokes of about 1.5 pose pixels, values in [0, 1]):

| ch | part             | strokes                                                     |
|----|------------------|-------------------------------------------------------------|
| 0  | torso            | neck-shoulders, shoulder line, shoulders-hips, hip line     |
| 1  | left arm         | shoulder-elbow-wrist (image left)                           |
| 2  | right arm        | shoulder-elbow-wrist (image right)                          |
| 3  | left hand        | the 21-point hand skeleton: wrist to each fingertip         |
| 4  | right hand       | the same                                                    |
| 5  | head             | head top-chin axis, eyes, brows, nose tip (dots)            |
| 6  | mouth            | the closed outer lip contour (its shape is the viseme)      |
| 7  | background       | a dot on every background landmark                          |

Hands and mouth get their own channels because they are what the refiner
must get right and what drifts first.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from engine.pose import keypoints as kp
from engine.pose.canvas import PixelGrid, bbox_of, capsule

CHANNELS = 8
STROKE_PIXELS = 1.5  # stroke width in pose pixels
DOT_PIXELS = 2.0  # dot radius in pose pixels


def _chain(group: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    idx = [kp.index(group, n) for n in names]
    return list(itertools.pairwise(idx))


def _hand_bones(group: str) -> list[tuple[int, int]]:
    start = kp.part(group).start
    return [(start + a, start + b) for chain in kp.FINGER_CHAINS for a, b in itertools.pairwise(chain)]


def _lip_loop() -> list[tuple[int, int]]:
    start = kp.LIPS.start
    return [(start + i, start + (i + 1) % kp.LIP_POINTS) for i in range(kp.LIP_POINTS)]


def _dots(group: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    return [(kp.index(group, n), kp.index(group, n)) for n in names]


STROKES: tuple[list[tuple[int, int]], ...] = (
    _chain("body", ("shoulder_l", "neck", "shoulder_r"))
    + _chain("body", ("shoulder_l", "shoulder_r", "hip_r", "hip_l", "shoulder_l")),
    _chain("body", ("shoulder_l", "elbow_l", "wrist_l")),
    _chain("body", ("shoulder_r", "elbow_r", "wrist_r")),
    _hand_bones("hand_l"),
    _hand_bones("hand_r"),
    _chain("body", ("head_top", "chin")) + _dots("face", ("eye_l", "eye_r", "brow_l", "brow_r", "nose_tip")),
    _lip_loop(),
    _dots("background", kp.BACKGROUND),
)
"""Per channel, the keypoint pairs drawn as strokes (a pair (i, i) is a dot)."""


def pose_tensor(points: Tensor, width: int, height: int) -> Tensor:
    """P [8, T, H, W] for keypoints [T, K, 2] (canvas units) on a W x H pose raster."""
    T = points.shape[0]
    grid = PixelGrid(T, width, height)
    out = torch.zeros(CHANNELS, T, height, width)
    for channel, pairs in enumerate(STROKES):
        for a, b in pairs:
            radius = (DOT_PIXELS if a == b else STROKE_PIXELS / 2) * grid.pixel
            pa, pb = points[:, a], points[:, b]
            sdf = capsule(pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1], radius)
            covered = grid.coverage(sdf, bbox_of(torch.stack((pa, pb), 1), 2 * radius))
            if covered is not None:
                rows, cols, cov = covered
                out[channel, :, rows, cols] = torch.maximum(out[channel, :, rows, cols], cov)
    return out
