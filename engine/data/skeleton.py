"""Forward kinematics: identity + motion -> keypoints of every frame (canvas units), batched in torch.

Hands follow the MediaPipe layout. Fingers flex toward the camera: a joint
bent by angle phi shortens its segment's projection by cos(phi), so past 90
degrees a finger folds back over the palm, as a fist looks from the front.
"l" and "r" name the hand on the image's left and right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from engine.data.identity import Identity
from engine.data.motion import Motion
from engine.pose import keypoints as kp

# Palm layout in units of the palm length: (along the hand, across toward the thumb side).
_MCP = ((1.0, 0.36), (1.05, 0.12), (1.0, -0.12), (0.92, -0.34))  # index, middle, ring, pinky
_FINGER_SEGMENTS = ((0.45, 0.28, 0.22), (0.5, 0.3, 0.23), (0.47, 0.28, 0.22), (0.36, 0.22, 0.19))
_THUMB_CMC = (0.22, 0.3)
_THUMB_SEGMENTS = (0.33, 0.3, 0.25)
_JOINT_FLEX = (1.45, 1.6, 1.1)  # radians at curl 1 for MCP, PIP, DIP
_THUMB_SPREAD = 0.9  # radians between the thumb and the hand axis when straight

LIP_THICKNESS = 0.05  # of the head half height


@dataclass(frozen=True)
class Pose:
    """Keypoints and the few shape parameters that are not points."""

    points: Tensor  # [T, K, 2] canvas units
    head_center: Tensor  # [T, 2]
    head_roll: Tensor  # [T]
    mouth_open: Tensor  # [T] ground-truth opening, 0 .. 1
    blink: Tensor  # [T]

    @property
    def frames(self) -> int:
        return self.points.shape[0]

    def slice(self, start: int, stop: int) -> Pose:
        return Pose(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})


def _rotate(v: Tensor, angle: Tensor) -> Tensor:
    """Rotate [T, ..., 2] vectors by angle [T] (y points down, so positive turns clockwise)."""
    c, s = torch.cos(angle), torch.sin(angle)
    while c.dim() < v.dim() - 1:
        c, s = c[..., None], s[..., None]
    return torch.stack((c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]), dim=-1)


def _two_link(shoulder: Tensor, target: Tensor, a: float, b: float, bend: float) -> tuple[Tensor, Tensor]:
    """Elbow and wrist [T, 2] of an arm reaching for target; `bend` (+1/-1) picks the elbow side."""
    d = target - shoulder
    dist = d.norm(dim=-1).clamp(min=abs(a - b) + 1e-4, max=(a + b) * 0.999)
    direction = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    wrist = shoulder + direction * dist[:, None]
    cos_alpha = ((a * a + dist * dist - b * b) / (2 * a * dist)).clamp(-1, 1)
    elbow = shoulder + a * _rotate(direction, bend * torch.acos(cos_alpha))
    return elbow, wrist


def hand_points(wrist: Tensor, angle: Tensor, curls: Tensor, size: float, side: float) -> Tensor:
    """The 21 hand keypoints [T, 21, 2] from wrist [T, 2], finger direction [T], curls [T, 5]."""
    T = wrist.shape[0]
    theta = side * angle
    along = torch.stack((torch.sin(theta), -torch.cos(theta)), dim=-1)  # [T, 2] finger direction
    # Across the palm toward the thumb; with the fingers up the thumb points to the body's centre.
    thumb_side = -side
    across = thumb_side * torch.stack((torch.cos(theta), torch.sin(theta)), dim=-1)

    def at(u: float, v: float) -> Tensor:
        return wrist + size * (u * along + v * across)

    points = torch.zeros(T, len(kp.HAND), 2)
    points[:, 0] = wrist
    # Thumb: spread away from the hand axis, swinging across the palm as it curls.
    swing = _THUMB_SPREAD * (1 - 1.6 * curls[:, 0])
    thumb_dir = along * torch.cos(swing)[:, None] + across * torch.sin(swing)[:, None]
    joint = at(*_THUMB_CMC)
    points[:, 1] = joint
    for k, length in enumerate(_THUMB_SEGMENTS):
        shrink = torch.cos(curls[:, 0] * 0.6 * (k + 1))
        joint = joint + size * length * shrink[:, None] * thumb_dir
        points[:, 2 + k] = joint
    # Fingers: MCP on the palm, then PIP, DIP, TIP with cumulative flexion.
    for f, ((u, v), segments) in enumerate(zip(_MCP, _FINGER_SEGMENTS, strict=True)):
        base = 5 + 4 * f
        joint = at(u, v)
        points[:, base] = joint
        flex = torch.zeros(T)
        for k, length in enumerate(segments):
            flex = flex + curls[:, f + 1] * _JOINT_FLEX[k]
            joint = joint + size * length * torch.cos(flex)[:, None] * along
            points[:, base + 1 + k] = joint
    return points


def pose_from_motion(identity: Identity, motion: Motion) -> Pose:
    """Keypoints of every frame of `motion` for `identity`."""
    idy = identity
    T = motion.frames
    pts = torch.zeros(T, kp.NUM_KEYPOINTS, 2)
    cx = idy.center_x + motion.sway  # [T]
    shoulder_y = idy.shoulder_y - 0.006 * motion.breath

    def put(group: str, name: str, x: Tensor | float, y: Tensor | float) -> None:
        pts[:, kp.index(group, name), 0] = x
        pts[:, kp.index(group, name), 1] = y

    # Head: hangs from the neck top, rolls about it, nods down.
    neck_top = torch.stack((cx, shoulder_y - idy.neck_length), dim=-1)
    roll = motion.head_roll
    offset = torch.stack((torch.zeros(T), -torch.full((T,), idy.head_ry * 0.9) + motion.head_pitch * 0.5), -1)
    head_center = neck_top + _rotate(offset, roll)

    def face(x: Tensor | float, y: Tensor | float) -> Tensor:
        """Head-frame point (x right, y down, from the head centre) -> canvas [T, 2]."""
        local = torch.stack(
            (torch.as_tensor(x).expand(T), torch.as_tensor(y).expand(T) + motion.head_pitch), -1
        )
        return head_center + _rotate(local, roll)

    ry = idy.head_ry
    opening = motion.mouth_open
    jaw = 0.14 * ry * opening
    head_top = head_center + _rotate(torch.stack((torch.zeros(T), torch.full((T,), -ry)), -1), roll)
    chin = head_center + _rotate(torch.stack((torch.zeros(T), ry + jaw), -1), roll)
    put("body", "head_top", head_top[:, 0], head_top[:, 1])
    put("body", "chin", chin[:, 0], chin[:, 1])
    put("body", "neck", cx, shoulder_y - 0.01)
    for side, name in ((-1, "l"), (1, "r")):
        put("body", f"shoulder_{name}", cx + side * idy.shoulder_width, shoulder_y)
        put(
            "body",
            f"hip_{name}",
            cx + side * idy.torso_width,
            torch.full((T,), idy.shoulder_y + idy.torso_length),
        )
        eye = face(side * idy.eye_spacing, -0.1 * ry)
        put("face", f"eye_{name}", eye[:, 0], eye[:, 1])
        brow = face(side * idy.eye_spacing, -0.1 * ry - 2.2 * idy.eye_size - 0.04 * ry * motion.brow_raise)
        put("face", f"brow_{name}", brow[:, 0], brow[:, 1])
    nose = face(0.0, 0.22 * ry + idy.nose_length * 0.5)
    put("face", "nose_tip", nose[:, 0], nose[:, 1])

    # Lips: an outer contour around the mouth, opened by the jaw, widened or rounded by the viseme.
    half_width = idy.mouth_width * (1 + 0.22 * motion.mouth_width - 0.3 * motion.mouth_round)
    thick = LIP_THICKNESS * ry
    top = thick * (1 + 0.3 * motion.mouth_round)
    bottom = thick * (1 + 0.3 * motion.mouth_round) + 0.28 * ry * opening
    mouth_y = 0.58 * ry + 0.3 * jaw
    for i in range(kp.LIP_POINTS):
        a = 2 * math.pi * i / kp.LIP_POINTS  # 0 = left corner, then over the top lip
        x = -half_width * math.cos(a)
        y = torch.where(torch.tensor(math.sin(a) > 0), -top * math.sin(a), -bottom * math.sin(a))
        p = face(x, mouth_y + y)
        put("face", f"lip_{i}", p[:, 0], p[:, 1])

    # Arms: two-link reach toward the wrist target, elbows bending outward; then the hands.
    reach = idy.upper_arm + idy.forearm
    for h, (side, name) in enumerate(((-1.0, "l"), (1.0, "r"))):
        shoulder = pts[:, kp.index("body", f"shoulder_{name}")]
        target = shoulder + reach * torch.stack((side * motion.wrist[:, h, 0], motion.wrist[:, h, 1]), -1)
        elbow, wrist = _two_link(shoulder, target, idy.upper_arm, idy.forearm, bend=-side)
        put("body", f"elbow_{name}", elbow[:, 0], elbow[:, 1])
        put("body", f"wrist_{name}", wrist[:, 0], wrist[:, 1])
        pts[:, kp.part(f"hand_{name}")] = hand_points(
            wrist, motion.hand_angle[:, h], motion.curls[:, h], idy.hand_size, side
        )

    for i, mark in enumerate(idy.landmarks):
        put("background", f"landmark_{i}", mark.x, mark.y)
    return Pose(points=pts, head_center=head_center, head_roll=roll, mouth_open=opening, blink=motion.blink)


def visibility(points: Tensor, width: int, height: int) -> Tensor:
    """1 where a keypoint [.., 2] lies inside a W x H image, else 0."""
    pixels = kp.to_pixels(points, width, height)
    inside = (
        (pixels[..., 0] >= 0) & (pixels[..., 0] < width) & (pixels[..., 1] >= 0) & (pixels[..., 1] < height)
    )
    return inside.float()
