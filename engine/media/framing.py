"""Real photos framed like the training characters: find the face, put it where training puts it.

The generators learnt people whose face has a certain size and place in the frame; a photo meets
them at its own scale (a passport photo fills the frame with a face, a landscape shot holds a small
one), and scaled to cover the frame it can lose the forehead or the whole face. So a photo is
framed by its face: OpenCV's frontal-face Haar cascade (it ships inside the opencv-python-headless
4.x wheel and runs offline) finds the largest face, and the photo is scaled and moved so that the
face box has FACE_BOX_HEIGHT of the frame's height, centred at FACE_BOX_CENTRE. What the photo
does not cover is filled with the photo itself, scaled to cover the frame and blurred (never
black bars the generator never saw), and the face is never cut off.

Where training puts the face: over 80 procedural identities at rest the eyes sit at 0.416 of the
frame height (std 0.02) and the lips at 0.501 (std 0.02), horizontally at the centre line
(std 0.05). A frontal-face cascade's box has the eyes about 38 % and the mouth about 78 % of the way
down, so the same face seen by it is a box 0.21 of the frame high, centred 0.44 down.

The cascade is for photos: it rarely fires on the procedural characters (4 of 20), which are
framed already; use them with `face_check=False` (`--no-face-check`; `ihuman render` and `serve`
skip the check by themselves for the bundle's own avatars).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import Config
from engine.media.errors import MediaError
from engine.media.image import cover
from engine.models.degradation import gaussian_blur

log = logging.getLogger(__name__)

FACE_BOX_HEIGHT = 0.21  # a detected face box's height, in frame heights (training's faces)
FACE_BOX_CENTRE = (0.0, 0.44)  # its centre: x from the frame's centre, y from the top, in frame heights
DETECT_SIDE = 1024  # photos are searched at most this large (long side): faces stay large enough
MIN_FACE_FRACTION = 0.04  # faces smaller than this share of the shorter side are ignored
PAD_BLUR = 0.03  # blur of the filled margin, in frame heights


class NoFaceError(MediaError):
    """The photo shows no face the detector can find."""


@dataclass(frozen=True)
class FaceBox:
    left: float  # pixels of the photo
    top: float
    width: float
    height: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2


@functools.cache
def _cascade() -> object:
    import cv2  # noqa: PLC0415  (only framing needs OpenCV)

    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def detect_faces(image: Tensor) -> list[FaceBox]:
    """Frontal faces in uint8 [3, H, W], most certain first (the cascade's last-stage weight; a
    collar or a helmet ring can pass as a larger, weaker face), in pixels of the image."""
    import cv2  # noqa: PLC0415

    _, H, W = image.shape
    scale = min(1.0, DETECT_SIDE / max(H, W))
    rgb = image.permute(1, 2, 0).numpy()
    if scale < 1:
        rgb = cv2.resize(rgb, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    side = max(24, round(MIN_FACE_FRACTION * min(grey.shape)))
    found, _, weights = _cascade().detectMultiScale3(  # type: ignore[attr-defined]
        grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side), outputRejectLevels=True
    )
    boxes = [
        (FaceBox(x / scale, y / scale, w / scale, h / scale), float(c))
        for (x, y, w, h), c in zip(
            np.asarray(found).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True
        )
    ]
    return [box for box, _ in sorted(boxes, key=lambda item: -item[1])]


def frame_face(image: Tensor, face: FaceBox, width: int, height: int) -> Tensor:
    """uint8 [3, H, W] -> uint8 [3, height, width] with `face` at the training place and size."""
    _, H, W = image.shape
    scale = FACE_BOX_HEIGHT * height / face.height  # frame pixels per photo pixel
    cx, cy = face.centre
    # Frame pixel centres -> photo pixels -> grid_sample's [-1, 1] (align_corners=False).
    xs = ((torch.arange(width) + 0.5 - (width / 2 + FACE_BOX_CENTRE[0] * height)) / scale + cx) / W * 2 - 1
    ys = ((torch.arange(height) + 0.5 - FACE_BOX_CENTRE[1] * height) / scale + cy) / H * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # [1, height, width, 2]
    photo = image[None].float()
    if scale < 1:  # shrinking: average the photo first, as `cover` does, instead of aliasing
        photo = F.interpolate(photo, scale_factor=scale, mode="bilinear", antialias=True)
    framed = F.grid_sample(photo, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(
        torch.ones_like(photo[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if bool((inside < 1).any()):
        # The margin: the whole photo scaled to cover the frame and blurred, behind the framed one,
        # with a soft edge between them.
        sigma = torch.tensor([PAD_BLUR * height])
        backdrop = gaussian_blur(cover(image[None].float(), width, height)[:, :, None], 2 * sigma)[:, :, 0]
        alpha = gaussian_blur(inside[:, :, None], sigma / 4)[:, :, 0].clamp(0, 1) * (inside > 0.5)
        framed = alpha * framed / inside.clamp_min(1e-3) + (1 - alpha) * backdrop
    return framed[0].clamp(0, 255).round().to(torch.uint8)


def framer(config: Config, face_check: bool, name: str) -> Callable[[Tensor], Tensor]:
    """frame_portrait for a config: pictures at twice its HR size (detail for both resolutions)."""
    width, height = 2 * config.hr.width, 2 * config.hr.height
    return functools.partial(frame_portrait, width=width, height=height, face_check=face_check, name=name)


def frame_portrait(
    image: Tensor, width: int, height: int, *, face_check: bool = True, name: str = "the photo"
) -> Tensor:
    """A photo uint8 [3, H, W] framed for the generators: uint8 [3, height, width].

    face_check: find the face and frame by it, refusing a photo without one (NoFaceError); False
    skips the detector and scales the picture to cover the frame (the procedural characters)."""
    if not face_check:
        return (cover(image[None].float(), width, height)[0]).clamp(0, 255).round().to(torch.uint8)
    faces = detect_faces(image)
    if not faces:
        raise NoFaceError(
            f"{name}: no face found. Use a photo with the face turned to the camera; a picture that is "
            "framed already (our procedural characters) can skip the check: --no-face-check"
        )
    log.info(
        "%s: face of %.0f px at (%.0f, %.0f); %d found", name, faces[0].height, *faces[0].centre, len(faces)
    )
    return frame_face(image, faces[0], width, height)
