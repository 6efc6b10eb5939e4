"""Render a character's frames from its keypoints (so the keypoints land on the drawn parts).

Painter's order: background and landmarks, long hair, torso, neck, head and
ears, hair, eyes with lids, brows, nose, mouth (lips, dark cavity, teeth,
tongue), arms, hands. Every part also writes its label into a label map
(`Label`), which the tests use to check keypoints, mouth area and hands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from engine.data.hands import HandFault, hand_drawing
from engine.data.identity import Identity
from engine.data.skeleton import LIP_THICKNESS, Pose
from engine.pose import keypoints as kp
from engine.pose.canvas import (
    Canvas,
    Sdf,
    bbox_of,
    box,
    capsule,
    circle,
    convex_polygon,
    ellipse,
    ellipse_distance,
    intersect,
)

CAVITY = (0.16, 0.03, 0.05)
TEETH = (0.95, 0.94, 0.9)
TONGUE = (0.75, 0.3, 0.35)
EYE_WHITE = (0.96, 0.96, 0.94)
CHUNK_PIXELS = 2_000_000  # pixels drawn at once (frames x H x W)


class Label(IntEnum):
    BACKGROUND = 0
    LANDMARK = 1
    HAIR = 2
    TORSO = 3
    NECK = 4
    HEAD = 5
    EYE = 6
    BROW = 7
    NOSE = 8
    LIPS = 9
    CAVITY = 10
    TEETH = 11
    TONGUE = 12
    ARM_L = 13
    ARM_R = 14
    PALM_L = 15
    PALM_R = 16
    FINGER_L = 17  # + finger index 0..4 (thumb .. pinky)
    FINGER_R = 22  # + finger index 0..4


@dataclass(frozen=True)
class Frames:
    image: Tensor  # [T, 3, H, W] float in [0, 1]
    labels: Tensor  # [T, H, W] uint8 Label values


def _darker(c: tuple[float, float, float], k: float) -> tuple[float, float, float]:
    return (c[0] * k, c[1] * k, c[2] * k)


def _background(idy: Identity, frames: int, width: int, height: int) -> Tensor:
    ramp = torch.linspace(0, 1, height).view(1, 1, height, 1)
    top = torch.tensor(idy.background_top).view(1, 3, 1, 1)
    bottom = torch.tensor(idy.background_bottom).view(1, 3, 1, 1)
    return (top + (bottom - top) * ramp).expand(frames, 3, height, width)


def _landmarks(canvas: Canvas, idy: Identity) -> None:
    for m in idy.landmarks:
        bbox = (m.x - 2 * m.size, m.y - 2 * m.size, m.x + 2 * m.size, m.y + 2 * m.size)
        if m.kind == "window":
            canvas.fill(
                box(m.x, m.y, m.size, m.size * 1.3, 0.005), bbox, _darker(m.color, 0.6), Label.LANDMARK
            )
            canvas.fill(box(m.x, m.y, m.size * 0.85, m.size * 1.15), bbox, (0.75, 0.87, 0.97), Label.LANDMARK)
            canvas.fill(
                box(m.x, m.y, m.size * 0.06, m.size * 1.15), bbox, _darker(m.color, 0.6), Label.LANDMARK
            )
        elif m.kind == "lamp":
            canvas.fill(
                capsule(m.x, m.y, m.x, m.y + 3 * m.size, 0.006), bbox, (0.2, 0.2, 0.2), Label.LANDMARK
            )
            canvas.fill(circle(m.x, m.y, m.size * 0.7), bbox, m.color, Label.LANDMARK)
        elif m.kind == "frame":
            canvas.fill(box(m.x, m.y, m.size * 1.2, m.size, 0.003), bbox, (0.35, 0.25, 0.15), Label.LANDMARK)
            canvas.fill(box(m.x, m.y, m.size * 1.0, m.size * 0.8), bbox, m.color, Label.LANDMARK)
        else:  # plant
            canvas.fill(
                box(m.x, m.y + m.size * 0.8, m.size * 0.5, m.size * 0.5, 0.01),
                bbox,
                (0.55, 0.3, 0.2),
                Label.LANDMARK,
            )
            for dx in (-0.5, 0.0, 0.5):
                leaf = ellipse(m.x + dx * m.size, m.y, m.size * 0.3, m.size * 0.8, dx)
                canvas.fill(leaf, bbox, m.color, Label.LANDMARK)


def _clothing_color(idy: Identity) -> tuple[float, float, float] | object:
    base = torch.tensor(idy.shirt).view(1, 3, 1, 1)
    accent = torch.tensor(idy.shirt_accent).view(1, 3, 1, 1)
    period = idy.pattern_scale
    if idy.clothing == "stripes":

        def stripes(x: Tensor, y: Tensor) -> Tensor:
            band = (torch.sin(2 * math.pi * y / period) > 0.3).float()[:, None]
            return base + (accent - base) * band

        return stripes
    if idy.clothing == "dots":

        def dots(x: Tensor, y: Tensor) -> Tensor:
            gx = torch.remainder(x, period) - period / 2
            gy = torch.remainder(y, period) - period / 2
            dot = (torch.hypot(gx, gy) < period * 0.22).float()[:, None]
            return base + (accent - base) * dot

        return dots
    return idy.shirt


def _point(pose: Pose, group: str, name: str) -> Tensor:
    return pose.points[:, kp.index(group, name)]


def render(
    identity: Identity,
    pose: Pose,
    width: int,
    height: int,
    hand_faults: Mapping[str, HandFault] | None = None,
) -> Frames:
    """Frames [T, 3, H, W] of `identity` in `pose`; hand_faults ("l"/"r" -> fault) break hands.

    Frames are drawn a few at a time: a chunk's working set stays in cache, and
    each shape's bounding box (a union over the chunk's frames) stays tight.
    """
    chunk = max(1, CHUNK_PIXELS // (width * height))
    if pose.frames > chunk:
        parts = [
            _render(identity, pose.slice(s, s + chunk), width, height, hand_faults)
            for s in range(0, pose.frames, chunk)
        ]
        return Frames(torch.cat([p.image for p in parts]), torch.cat([p.labels for p in parts]))
    return _render(identity, pose, width, height, hand_faults)


def _render(
    identity: Identity,
    pose: Pose,
    width: int,
    height: int,
    hand_faults: Mapping[str, HandFault] | None,
) -> Frames:
    idy, T = identity, pose.frames
    canvas = Canvas(T, width, height, _background(idy, T, width, height))
    _landmarks(canvas, idy)

    hc, roll = pose.head_center, pose.head_roll
    rx, ry = idy.head_rx, idy.head_ry
    head_box = bbox_of(hc, 1.6 * ry)
    # Long hair falls behind the shoulders.
    if idy.hair_style == "long":
        canvas.fill(
            ellipse(hc[:, 0], hc[:, 1] + 0.5 * ry, rx * 1.25, ry * 1.6, roll),
            bbox_of(hc, 2.8 * ry),
            idy.hair,
            Label.HAIR,
        )

    # Torso: a rounded trapezoid from the shoulders to the hips, in the clothing pattern.
    sl, sr = _point(pose, "body", "shoulder_l"), _point(pose, "body", "shoulder_r")
    hl, hr = _point(pose, "body", "hip_l"), _point(pose, "body", "hip_r")
    torso = torch.stack((sl, sr, hr, hl), dim=1)
    radius = idy.limb_width
    canvas.fill(convex_polygon(torso, radius), bbox_of(torso, 2 * radius), _clothing_color(idy), Label.TORSO)

    neck = _point(pose, "body", "neck")
    canvas.fill(
        capsule(neck[:, 0], neck[:, 1], hc[:, 0], hc[:, 1], idy.neck_width),
        bbox_of(torch.stack((neck, hc), 1), 0.08),
        _darker(idy.skin, 0.9),
        Label.NECK,
    )

    # Head: skull ellipse plus a jaw that drops with the chin keypoint; ears.
    chin = _point(pose, "body", "chin")
    for side in (-1, 1):
        ear = hc + torch.stack((side * rx * torch.cos(roll), side * rx * torch.sin(roll)), -1)
        canvas.fill(
            ellipse(ear[:, 0], ear[:, 1], rx * 0.18, ry * 0.25, roll),
            head_box,
            _darker(idy.skin, 0.93),
            Label.HEAD,
        )
    canvas.fill(ellipse(hc[:, 0], hc[:, 1], rx, ry, roll), head_box, idy.skin, Label.HEAD)
    jaw_center = (hc + chin) / 2
    jaw_ry = (chin - hc).norm(dim=-1) / 2 + 0.02 * ry
    canvas.fill(
        ellipse(jaw_center[:, 0], jaw_center[:, 1], rx * 0.78, jaw_ry, roll), head_box, idy.skin, Label.HEAD
    )
    _hair(canvas, idy, pose, head_box)
    _eyes(canvas, idy, pose, head_box)
    _mouth(canvas, idy, pose, head_box)
    _arms_and_hands(canvas, idy, pose, hand_faults)
    return Frames(image=canvas.image.clamp(0, 1), labels=canvas.labels)


def _hair(canvas: Canvas, idy: Identity, pose: Pose, bbox: tuple[float, float, float, float]) -> None:
    hc, roll = pose.head_center, pose.head_roll
    rx, ry = idy.head_rx, idy.head_ry
    top = hc + torch.stack((ry * 1.0 * torch.sin(roll), -ry * 1.0 * torch.cos(roll)), -1)
    style = idy.hair_style
    if style == "bald":
        return
    if style == "curly":
        for i in range(9):
            a = math.pi * (0.05 + 0.9 * i / 8)
            off = torch.stack(
                (-rx * math.cos(a) * torch.ones_like(roll), -ry * 0.85 * math.sin(a) * torch.ones_like(roll)),
                -1,
            )
            c, s = torch.cos(roll), torch.sin(roll)
            p = hc + torch.stack((c * off[:, 0] - s * off[:, 1], s * off[:, 0] + c * off[:, 1]), -1)
            canvas.fill(circle(p[:, 0], p[:, 1], ry * 0.3), bbox, idy.hair, Label.HAIR)
        return
    # A cap over the top of the skull, cut below the forehead line.
    cap = intersect(
        ellipse(hc[:, 0], hc[:, 1] - 0.06 * ry, rx * 1.08, ry * 1.02, roll),
        ellipse(top[:, 0], top[:, 1], rx * 1.3, ry * 0.5, roll),  # hairline half a head up
    )
    canvas.fill(cap, bbox, idy.hair, Label.HAIR)
    if style == "bun":
        bun = hc + torch.stack((ry * 1.05 * torch.sin(roll), -ry * 1.05 * torch.cos(roll)), -1)
        canvas.fill(circle(bun[:, 0], bun[:, 1], ry * 0.32), bbox, idy.hair, Label.HAIR)


def _eyes(canvas: Canvas, idy: Identity, pose: Pose, bbox: tuple[float, float, float, float]) -> None:
    roll, size = pose.head_roll, idy.eye_size
    for name in ("l", "r"):
        eye = _point(pose, "face", f"eye_{name}")
        ex, ey = eye[:, 0], eye[:, 1]
        canvas.fill(ellipse(ex, ey, size * 1.5, size, roll), bbox, EYE_WHITE, Label.EYE)
        canvas.fill(circle(ex, ey, size * 0.72), bbox, idy.iris, Label.EYE)
        canvas.fill(circle(ex, ey, size * 0.32), bbox, (0.03, 0.03, 0.03), Label.EYE)
        # Lid: skin covering the eye from the top down to `blink`.
        lid_bottom = ey - size + 2 * size * pose.blink
        lid = intersect(
            ellipse(ex, ey, size * 1.6, size * 1.1, roll),
            box(ex, lid_bottom - size, size * 2, size),
        )
        canvas.fill(lid, bbox, _darker(idy.skin, 0.95), Label.HEAD)
        brow = _point(pose, "face", f"brow_{name}")
        canvas.fill(
            capsule(
                brow[:, 0] - size * 1.3,
                brow[:, 1] + size * 0.15,
                brow[:, 0] + size * 1.3,
                brow[:, 1],
                size * 0.28,
            ),
            bbox,
            _darker(idy.hair, 0.8),
            Label.BROW,
        )
    nose = _point(pose, "face", "nose_tip")
    canvas.fill(
        capsule(nose[:, 0], nose[:, 1] - idy.nose_length, nose[:, 0], nose[:, 1], size * 0.35),
        bbox,
        _darker(idy.skin, 0.82),
        Label.NOSE,
    )


def _mouth(canvas: Canvas, idy: Identity, pose: Pose, bbox: tuple[float, float, float, float]) -> None:
    lips = pose.points[:, kp.part("face")][:, 5:]  # [T, 12, 2] outer lip contour
    left, right = lips[:, 0], lips[:, kp.LIP_POINTS // 2]
    top, bottom = lips[:, kp.LIP_POINTS // 4], lips[:, 3 * kp.LIP_POINTS // 4]
    center = (left + right) / 2
    half_width = (right - left).norm(dim=-1) / 2
    roll = pose.head_roll
    c, s = torch.cos(roll), torch.sin(roll)
    up = ((top - center) * torch.stack((-s, c), -1)).sum(-1).abs()  # upper extent along the head's y
    down = ((bottom - center) * torch.stack((-s, c), -1)).sum(-1).abs()

    def split_ellipse(rx: Tensor, r_up: Tensor, r_down: Tensor, shift: Tensor | None = None) -> Sdf:
        """Ellipse around the mouth centre (moved down the head by shift) with different upper/lower radii."""
        cx = center[:, 0].view(-1, 1, 1)
        cy = (center[:, 1] + (0 if shift is None else shift)).view(-1, 1, 1)
        cr, sr = c.view(-1, 1, 1), s.view(-1, 1, 1)

        def sdf(x: Tensor, y: Tensor) -> Tensor:
            u = cr * (x - cx) + sr * (y - cy)
            v = -sr * (x - cx) + cr * (y - cy)
            ry = torch.where(v < 0, r_up.view(-1, 1, 1), r_down.view(-1, 1, 1))
            return ellipse_distance(u, v, rx.view(-1, 1, 1), ry)

        return sdf

    canvas.fill(split_ellipse(half_width, up, down), bbox, idy.lips, Label.LIPS)
    thick = LIP_THICKNESS * idy.head_ry
    # The cavity exists only while the mouth is open; its height grows with the opening.
    inner_up = (up - thick).clamp_min(0) * 0.3
    inner_down = (down - thick * 1.05).clamp_min(0)
    cavity = split_ellipse(half_width * 0.82, inner_up, inner_down)
    canvas.fill(cavity, bbox, CAVITY, Label.CAVITY)
    height = inner_up + inner_down
    # Upper teeth hang from the top of the cavity, the tongue lies at its bottom.
    teeth = intersect(
        cavity, split_ellipse(half_width * 0.7, 0.2 * height, 0.2 * height, 0.18 * height - inner_up)
    )
    canvas.fill(teeth, bbox, TEETH, Label.TEETH)
    tongue = intersect(
        cavity, split_ellipse(half_width * 0.55, 0.25 * height, 0.25 * height, inner_down * 0.85)
    )
    canvas.fill(tongue, bbox, TONGUE, Label.TONGUE)


def _arms_and_hands(
    canvas: Canvas, idy: Identity, pose: Pose, faults: Mapping[str, HandFault] | None
) -> None:
    r = idy.limb_width
    sleeve = _darker(idy.shirt, 0.9)
    for name, arm_label, palm_label, finger_label in (
        ("l", Label.ARM_L, Label.PALM_L, Label.FINGER_L),
        ("r", Label.ARM_R, Label.PALM_R, Label.FINGER_R),
    ):
        s, e, w = (_point(pose, "body", f"{j}_{name}") for j in ("shoulder", "elbow", "wrist"))
        joints = torch.stack((s, e, w), 1)
        canvas.fill(
            capsule(s[:, 0], s[:, 1], e[:, 0], e[:, 1], r), bbox_of(joints[:, :2], 2 * r), sleeve, arm_label
        )
        canvas.fill(
            capsule(e[:, 0], e[:, 1], w[:, 0], w[:, 1], r * 0.85),
            bbox_of(joints[:, 1:], 2 * r),
            idy.skin,
            arm_label,
        )
        hand = pose.points[:, kp.part(f"hand_{name}")]  # [T, 21, 2]
        drawing = hand_drawing(hand, idy.hand_size, (faults or {}).get(name))
        hand_box = bbox_of(torch.cat((hand, drawing.palm), 1), 0.03)
        canvas.fill(convex_polygon(drawing.palm, drawing.palm_rounding), hand_box, idy.skin, palm_label)
        for stroke in drawing.strokes:
            shade = _darker(idy.skin, 0.97 - 0.02 * stroke.finger)
            sdf = capsule(stroke.a[:, 0], stroke.a[:, 1], stroke.b[:, 0], stroke.b[:, 1], stroke.width)
            canvas.fill(sdf, hand_box, shade, finger_label + stroke.finger)
