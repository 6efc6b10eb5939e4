from pathlib import Path

import pytest
import torch

from engine.data.dataset import ClipWindows, WindowSpec
from engine.models.pose import MOUTH_CROP_SAMPLES, PoseHead, mouth_crops, pose_loss
from engine.pose import keypoints as kp
from engine.presets import get_preset

FIXTURES = Path(__file__).parents[2] / "fixtures" / "procedural"


def test_outputs_are_canvas_coordinates() -> None:
    head = PoseHead(get_preset("tiny"))
    points, visible = head(torch.rand(2, 3, 96, 160))
    assert points.shape == (2, kp.NUM_KEYPOINTS, 2) and visible.shape == (2, kp.NUM_KEYPOINTS)
    half_width = 160 / 96 / 2
    assert points[..., 0].abs().max() <= half_width and 0 <= points[..., 1].min() <= points[..., 1].max() <= 1


@pytest.mark.slow
def test_pose_head_learns_keypoints_of_procedural_frames() -> None:
    window = ClipWindows(FIXTURES, WindowSpec(frames=8, width=160, height=96))[1]  # the mouth moves
    head = PoseHead(get_preset("tiny"))
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    errors = []
    for _ in range(35):  # the error is under 3 px from about step 25 on
        points, visible, heatmaps = head.predict(window["frames"])
        loss, stats = pose_loss(points, visible, window["points"], window["visibility"], heatmaps, (160, 96))
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(stats["coord_l1"] * 96)  # canvas units -> pixels (x + y)
    assert errors[0] > 10
    assert errors[-1] < 3, errors[-1]
    points = head(window["frames"])[0]
    assert torch.allclose(head.mouth_opening(window["frames"]), head.mouth_opening(window["frames"], points))


def test_mouth_reader_learns_the_opening_from_lip_crops() -> None:
    window = ClipWindows(FIXTURES, WindowSpec(frames=8, width=160, height=96))[1]
    crops = mouth_crops(window["frames"], window["points"])  # placed by the true keypoints
    head = PoseHead(get_preset("tiny"))
    opt = torch.optim.AdamW(head.mouth.parameters(), lr=2e-3)
    errors = []
    for _ in range(60):
        loss = (head.mouth(crops).squeeze(-1) - window["mouth_open"]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(float(loss.detach()))
    assert window["mouth_open"].std() > 0.2  # a window where the mouth moves
    assert errors[-1] < 0.3 * errors[0], (errors[0], errors[-1])


def test_mouth_loss_does_not_move_the_keypoints() -> None:
    """The mouth reader's crop is placed by detached keypoints: its loss leaves the heatmaps alone."""
    head = PoseHead(get_preset("tiny"))
    opening = head.mouth_opening(torch.rand(2, 3, 96, 160))
    opening.sum().backward()
    assert head.heatmaps.weight.grad is None and head.mouth[0].weight.grad.abs().sum() > 0


def test_mouth_crop_is_centred_on_the_lips() -> None:
    window = ClipWindows(FIXTURES, WindowSpec(frames=2, width=160, height=96))[0]
    points = window["points"]
    frames = torch.zeros(2, 3, 96, 160)
    centre = kp.to_pixels(points[:, kp.LIPS].mean(1), 160, 96).round().long()
    for i, (x, y) in enumerate(centre.tolist()):
        frames[i, :, y - 1 : y + 1, x - 1 : x + 1] = 1.0
    crops = mouth_crops(frames, points)
    assert crops.shape == (2, 3, MOUTH_CROP_SAMPLES, MOUTH_CROP_SAMPLES)
    middle = MOUTH_CROP_SAMPLES // 2
    assert (crops[:, :, middle - 1 : middle + 1, middle - 1 : middle + 1] > 0).all()  # the dot, in [-1, 1]
    assert (crops[:, :, :3, :3] == -1).all()  # black around it
