"""A contact sheet of procedural frames: `python -m engine.data.contact_sheet OUT.png`.

14 frames of different characters at moments with the mouth open or closed
and hands in several poses, then one broken-hand pair (good | broken),
zoomed on the hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import TimeBase
from engine.data.clip import make_clip
from engine.data.hands import sample_fault
from engine.data.identity import sample_identity
from engine.data.motion import OPEN_CURL, motion_from_audio
from engine.data.render import render
from engine.data.skeleton import pose_from_motion
from engine.pose import keypoints as kp

TILE = (320, 176)  # width, height


def write_png(path: Path, image: Tensor) -> None:
    """Write a float [3, H, W] image in [0, 1] as PNG (PyAV's encoder; no imaging library needed)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = array.shape[1], array.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))


def _tile(image: Tensor) -> Tensor:
    return F.interpolate(image[None], size=TILE[::-1], mode="bilinear", antialias=True)[0]


def _moments(seed: int) -> list[Tensor]:
    """Two frames of one character: the widest-open mouth, then the most raised hand or a closed mouth."""
    clip = make_clip(seed, 4.0, 640, 352)
    frames = clip.frames.float() / 255
    wrists = clip.points[:, [kp.index("body", "wrist_l"), kp.index("body", "wrist_r")], 1]
    raised = int(wrists.min(dim=1).values.argmin())
    closed = torch.nonzero(clip.mouth_open == 0).flatten()
    second = int(closed[len(closed) // 2]) if seed % 2 and len(closed) else raised
    return [_tile(frames[int(clip.mouth_open.argmax())]), _tile(frames[second])]


def _broken_pair(seed: int) -> list[Tensor]:
    time = TimeBase()
    motion = motion_from_audio(np.zeros(time.samples_per_frame), seed, time)
    motion = dataclasses.replace(
        motion,
        wrist=torch.tensor([[0.6, -0.3], [0.6, -0.3]])[None],
        hand_angle=torch.zeros(1, 2),
        curls=torch.tensor([OPEN_CURL, OPEN_CURL])[None],
    )
    identity = sample_identity(seed)
    pose = pose_from_motion(identity, motion)
    fault = sample_fault(random.Random(seed))
    good = render(identity, pose, 1280, 720).image[0]
    bad = render(identity, pose, 1280, 720, {"r": fault}).image[0]
    hand = kp.to_pixels(pose.points[0, kp.part("hand_r")], 1280, 720).mean(0)
    x0 = int(hand[0]) - 160
    y0 = int(hand[1]) - 88
    x0, y0 = max(0, min(1280 - 320, x0)), max(0, min(720 - 176, y0))
    return [img[:, y0 : y0 + 176, x0 : x0 + 320] for img in (good, bad)]


def contact_sheet() -> Tensor:
    tiles = [t for seed in range(7) for t in _moments(seed)] + _broken_pair(3)
    rows = [torch.cat(tiles[i : i + 4], dim=2) for i in range(0, 16, 4)]
    return torch.cat(rows, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    write_png(parser.parse_args().out, contact_sheet())


if __name__ == "__main__":
    main()
