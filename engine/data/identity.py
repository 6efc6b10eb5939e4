"""A character's identity: a seeded random draw of proportions, palette, hair, clothes and background.

The same seed gives the same character on every machine (Python's `random`,
not a torch generator whose stream may differ between devices or versions).
All lengths are canvas units (image height = 1).
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass

from engine.pose.keypoints import BACKGROUND_LANDMARKS

HAIR_STYLES = ("short", "long", "bun", "curly", "bald")
CLOTHING = ("solid", "stripes", "dots")
LANDMARK_KINDS = ("window", "lamp", "frame", "plant")

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Landmark:
    kind: str  # one of LANDMARK_KINDS
    x: float  # centre, canvas units from the image centre
    y: float  # centre, canvas units from the top
    size: float  # half extent
    color: RGB


@dataclass(frozen=True)
class Identity:
    seed: int
    # proportions
    center_x: float  # body centre line
    shoulder_y: float  # height of the shoulder line
    head_rx: float  # head half width
    head_ry: float  # head half height
    neck_length: float
    neck_width: float
    shoulder_width: float  # half distance between the shoulders
    torso_width: float  # half width at the hips
    torso_length: float
    upper_arm: float
    forearm: float
    limb_width: float  # arm radius
    hand_size: float  # palm length; fingers scale with it
    eye_spacing: float  # half distance between the eyes
    eye_size: float
    mouth_width: float  # half width of the closed mouth
    nose_length: float
    # palette
    skin: RGB
    hair: RGB
    lips: RGB
    iris: RGB
    shirt: RGB
    shirt_accent: RGB
    background_top: RGB
    background_bottom: RGB
    # styles
    hair_style: str
    clothing: str
    pattern_scale: float  # stripe period / dot spacing
    landmarks: tuple[Landmark, ...]


def _hsv(rng: random.Random, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v))
    return (r, g, b)


def sample_identity(seed: int) -> Identity:
    """The character of `seed`."""
    rng = random.Random(seed)
    u = rng.uniform
    head_ry = u(0.11, 0.14)
    landmarks = []
    kinds = rng.sample(LANDMARK_KINDS, k=len(LANDMARK_KINDS))
    for i in range(BACKGROUND_LANDMARKS):
        side = -1 if i % 2 == 0 else 1
        landmarks.append(
            Landmark(
                kind=kinds[i % len(kinds)],
                x=side * u(0.42, 0.78),
                y=u(0.12, 0.75),
                size=u(0.05, 0.1),
                color=_hsv(rng, (0, 1), (0.3, 0.8), (0.4, 0.9)),
            )
        )
    skin_v = u(0.35, 0.95)
    return Identity(
        seed=seed,
        center_x=u(-0.08, 0.08),
        shoulder_y=u(0.58, 0.64),
        head_rx=head_ry * u(0.72, 0.85),
        head_ry=head_ry,
        neck_length=u(0.06, 0.08),
        neck_width=u(0.035, 0.05),
        shoulder_width=u(0.15, 0.2),
        torso_width=u(0.13, 0.18),
        torso_length=u(0.45, 0.55),
        upper_arm=u(0.17, 0.2),
        forearm=u(0.15, 0.18),
        limb_width=u(0.028, 0.038),
        hand_size=u(0.045, 0.055),
        eye_spacing=head_ry * u(0.32, 0.4),
        eye_size=head_ry * u(0.13, 0.17),
        mouth_width=head_ry * u(0.28, 0.36),
        nose_length=head_ry * u(0.18, 0.26),
        skin=_hsv(rng, (0.03, 0.09), (0.25, 0.6), (skin_v, skin_v)),
        hair=_hsv(rng, (0.0, 0.12), (0.2, 0.9), (0.08, 0.85)),
        lips=_hsv(rng, (0.95, 1.02), (0.35, 0.6), (0.45, 0.8)),
        iris=_hsv(rng, (0.05, 0.65), (0.4, 0.9), (0.2, 0.6)),
        shirt=_hsv(rng, (0, 1), (0.3, 0.9), (0.3, 0.9)),
        shirt_accent=_hsv(rng, (0, 1), (0.1, 0.9), (0.6, 1.0)),
        background_top=_hsv(rng, (0, 1), (0.05, 0.35), (0.55, 0.95)),
        background_bottom=_hsv(rng, (0, 1), (0.05, 0.35), (0.3, 0.7)),
        hair_style=rng.choice(HAIR_STYLES),
        clothing=rng.choice(CLOTHING),
        pattern_scale=u(0.03, 0.06),
        landmarks=tuple(landmarks),
    )
