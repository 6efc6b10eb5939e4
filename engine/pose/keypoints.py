"""The keypoint layout every part of the data (and the pose tensor) agrees on.

Coordinates are "canvas units": y runs from 0 (top) to 1 (bottom) of the image,
x is measured in the same unit from the image's horizontal centre, so a
character keeps its proportions at any resolution and aspect ratio
(`to_pixels` maps to a W x H image).
"""

from __future__ import annotations

import torch
from torch import Tensor

BODY = (
    "head_top",
    "chin",
    "neck",
    "shoulder_l",
    "shoulder_r",
    "elbow_l",
    "elbow_r",
    "wrist_l",
    "wrist_r",
    "hip_l",
    "hip_r",
)

# MediaPipe hand layout: 0 wrist; thumb CMC, MCP, IP, TIP; then MCP, PIP, DIP, TIP of
# index, middle, ring and pinky.
HAND = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    *(
        f"{finger}_{joint}"
        for finger in ("index", "middle", "ring", "pinky")
        for joint in ("mcp", "pip", "dip", "tip")
    ),
)
FINGER_CHAINS = (
    (0, 1, 2, 3, 4),
    (0, 5, 6, 7, 8),
    (0, 9, 10, 11, 12),
    (0, 13, 14, 15, 16),
    (0, 17, 18, 19, 20),
)
FINGERTIPS = (4, 8, 12, 16, 20)

LIP_POINTS = 12  # outer lip contour, clockwise from the left mouth corner
FACE = (
    "eye_l",
    "eye_r",
    "brow_l",
    "brow_r",
    "nose_tip",
    *(f"lip_{i}" for i in range(LIP_POINTS)),
)

BACKGROUND_LANDMARKS = 4
BACKGROUND = tuple(f"landmark_{i}" for i in range(BACKGROUND_LANDMARKS))


GROUPS: dict[str, tuple[str, ...]] = {
    "body": BODY,
    "hand_l": HAND,
    "hand_r": HAND,
    "face": FACE,
    "background": BACKGROUND,
}
"""Keypoint groups in the order they are stacked in a [.., NUM_KEYPOINTS, 2] tensor."""

_STARTS: dict[str, int] = {}
for _name, _names in GROUPS.items():
    _STARTS[_name] = sum(len(GROUPS[g]) for g in _STARTS)
NUM_KEYPOINTS = sum(len(names) for names in GROUPS.values())


def part(group: str) -> slice:
    """Index range of a keypoint group: body, hand_l, hand_r, face, background."""
    return slice(_STARTS[group], _STARTS[group] + len(GROUPS[group]))


def index(group: str, name: str) -> int:
    """Global index of a named keypoint, e.g. index("body", "wrist_l")."""
    return _STARTS[group] + GROUPS[group].index(name)


def to_pixels(points: Tensor, width: int, height: int) -> Tensor:
    """Canvas units [..., 2] -> pixel coordinates (x, y) of a W x H image (pixel centres at +0.5)."""
    scale = torch.tensor([height, height], dtype=points.dtype, device=points.device)
    shift = torch.tensor([width / 2, 0.0], dtype=points.dtype, device=points.device)
    return points * scale + shift


LIPS = slice(index("face", "lip_0"), index("face", "lip_0") + LIP_POINTS)
"""The outer lip contour's keypoints."""
