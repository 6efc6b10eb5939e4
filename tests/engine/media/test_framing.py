"""Real photos framed by their face, where the training characters have theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.media.framing import FACE_BOX_CENTRE, FACE_BOX_HEIGHT, NoFaceError, detect_faces, frame_portrait
from engine.media.image import read_image

PHOTOS = Path(__file__).parents[2] / "fixtures" / "photos"


def _landscape(photo: torch.Tensor, width: int, height: int, at: tuple[int, int]) -> torch.Tensor:
    """The photo pasted small into a large grey picture (a small face in a big photo)."""
    canvas = torch.full((3, height, width), 90, dtype=torch.uint8)
    _, h, w = photo.shape
    canvas[:, at[1] : at[1] + h, at[0] : at[0] + w] = photo
    return canvas


def _assert_face_where_training_puts_it(framed: torch.Tensor) -> None:
    _, height, width = framed.shape
    faces = detect_faces(framed)
    assert faces, "the framed picture still shows the face"
    face = faces[0]
    # The cascade's box of one face varies by a fifth or so between scales and crops.
    assert face.height == pytest.approx(FACE_BOX_HEIGHT * height, rel=0.3)
    cx, cy = face.centre
    assert cx == pytest.approx(width / 2 + FACE_BOX_CENTRE[0] * height, abs=0.05 * height)
    assert cy == pytest.approx(FACE_BOX_CENTRE[1] * height, abs=0.05 * height)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p,  # the portrait as it is
        lambda p: p[:, 40:330, :],  # a landscape crop of it
        lambda p: _landscape(p, 1600, 900, (1100, 60)),  # a small face off to the side of a big photo
        lambda p: p.flip(-1),  # mirrored
    ],
    ids=["portrait", "landscape-crop", "small-face-in-big-photo", "mirrored"],
)
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_the_face_lands_where_training_puts_it(name: str, make: object) -> None:
    photo = make(read_image(PHOTOS / f"{name}.jpg"))  # type: ignore[operator]
    width, height = 640, 352
    framed = frame_portrait(photo, width, height)
    assert framed.shape == (3, height, width) and framed.dtype == torch.uint8
    _assert_face_where_training_puts_it(framed)
    # The margin a photo does not cover is filled, not black.
    assert framed.float().mean((1, 2)).min() > 20


@pytest.mark.parametrize(
    "name", ["astronaut_far", "astronaut_selfie", "grace_hopper_print", "grace_hopper_wide"]
)
def test_the_framings_users_send_are_framed_alike(name: str) -> None:
    """The fixtures' other framings (tests/fixtures/photos/make_framings.py): a small face in a
    landscape shot, a tilted close-up, a faded print, a wide crop."""
    _assert_face_where_training_puts_it(frame_portrait(read_image(PHOTOS / f"{name}.jpg"), 320, 176))


def test_a_photo_without_a_face_is_refused_unless_the_check_is_off() -> None:
    picture = read_image(PHOTOS / "camera.jpg")  # a man turned away from the camera
    with pytest.raises(NoFaceError, match="no face found"):
        frame_portrait(picture, 320, 176, name="camera.jpg")
    with pytest.raises(NoFaceError):
        frame_portrait(torch.full((3, 200, 300), 128, dtype=torch.uint8), 320, 176)
    as_it_is = frame_portrait(picture, 320, 176, face_check=False)
    assert as_it_is.shape == (3, 176, 320)
