"""How a hand is drawn, and the plausible faults of broken hands (paired data for the hand evaluator).

A hand is drawn as a palm polygon and finger strokes (capsules along the
bones). A good hand follows its 21 keypoints exactly; a broken one changes the
strokes the way generators get hands wrong: a finger missing or extra, two
fingers fused, a finger bent backwards, an extra joint, or a melted palm.
The keypoints stay those of the good hand: they are what the hand should be.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.pose import keypoints as kp

FAULTS = ("missing_finger", "extra_finger", "fused", "bent_back", "extra_joint", "melted")


@dataclass(frozen=True)
class HandFault:
    kind: str  # one of FAULTS
    finger: int  # the finger it affects (1 index .. 4 pinky; fused: this one and the next)
    amount: float  # kind-specific strength in [0, 1]


@dataclass(frozen=True)
class Stroke:
    a: Tensor  # [T, 2]
    b: Tensor  # [T, 2]
    width: float
    finger: int  # 0 thumb .. 4 pinky (labels)


@dataclass(frozen=True)
class HandDrawing:
    palm: Tensor  # [T, n, 2] convex palm polygon
    palm_rounding: float
    strokes: tuple[Stroke, ...]


def sample_fault(rng: random.Random) -> HandFault:
    kind = rng.choice(FAULTS)
    finger = rng.randint(1, 3) if kind == "fused" else rng.randint(1, 4)
    return HandFault(kind=kind, finger=finger, amount=rng.uniform(0.0, 1.0))


def _rotate_about(p: Tensor, center: Tensor, angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    d = p - center
    return center + torch.stack((c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]), -1)


def finger_width(size: float, finger: int) -> float:
    return size * (0.13 if finger == 0 else 0.11 - 0.008 * finger)


def hand_drawing(points: Tensor, size: float, fault: HandFault | None = None) -> HandDrawing:
    """The palm and strokes of a hand with keypoints [T, 21, 2] and palm length `size`."""
    joints = {f: [points[:, i] for i in chain[1:]] for f, chain in enumerate(kp.FINGER_CHAINS)}
    widths = {f: finger_width(size, f) for f in joints}
    palm = points[:, [0, 1, 5, 9, 13, 17]]
    rounding = size * 0.12
    extra: list[tuple[int, list[Tensor]]] = []
    if fault is not None:
        f, amount = fault.finger, fault.amount
        if fault.kind == "missing_finger":
            del joints[f]
        elif fault.kind == "extra_finger":
            side = 1 if amount > 0.5 else -1
            base = joints[f][0]
            extra.append((f, [_rotate_about(j, base, side * (0.3 + 0.2 * amount)) for j in joints[f]]))
        elif fault.kind == "fused":
            joints[f] = [(a + b) / 2 for a, b in zip(joints[f], joints[f + 1], strict=True)]
            widths[f] = widths[f] * 2.1
            del joints[f + 1]
        elif fault.kind == "bent_back":
            pip = joints[f][1]
            angle = (1.6 + 0.8 * amount) * (1 if f % 2 else -1)
            joints[f] = joints[f][:2] + [_rotate_about(j, pip, angle) for j in joints[f][2:]]
        elif fault.kind == "extra_joint":
            tip, dip = joints[f][-1], joints[f][-2]
            kink = _rotate_about(tip + (tip - dip), tip, 0.7 + 0.6 * amount)
            joints[f] = [*joints[f], kink]
        elif fault.kind == "melted":
            centroid = palm.mean(dim=1, keepdim=True)
            palm = centroid + (palm - centroid) * (1.35 + 0.3 * amount)
            rounding = size * 0.3
            for g, chain in joints.items():
                joints[g] = [chain[0] + (j - chain[0]) * 0.45 for j in chain]
                widths[g] *= 1.6
    strokes = []
    for f, chain in [*joints.items(), *extra]:
        for i, (pa, pb) in enumerate(itertools.pairwise(chain)):
            end = pb
            if i == len(chain) - 2:
                # End the drawn finger at its tip: pull the last segment's end back by the radius.
                direction = pb - pa
                length = direction.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                end = pb - direction / length * torch.clamp(length, max=widths[f])
            strokes.append(Stroke(pa, end, widths[f], f))
    return HandDrawing(palm=palm, palm_rounding=rounding, strokes=tuple(strokes))
