from pathlib import Path

import torch

from engine.config import get_preset
from engine.data import keypoints as kp
from engine.data.dataset import ClipWindows, WindowSpec
from engine.models.pose import PoseHead, pose_loss

FIXTURES = Path(__file__).parents[2] / "fixtures" / "procedural"


def test_outputs_are_canvas_coordinates() -> None:
    head = PoseHead(get_preset("tiny"))
    points, visible = head(torch.rand(2, 3, 96, 160))
    assert points.shape == (2, kp.NUM_KEYPOINTS, 2) and visible.shape == (2, kp.NUM_KEYPOINTS)
    half_width = 160 / 96 / 2
    assert points[..., 0].abs().max() <= half_width and 0 <= points[..., 1].min() <= points[..., 1].max() <= 1


def test_pose_head_learns_keypoints_of_procedural_frames() -> None:
    window = ClipWindows(FIXTURES, WindowSpec(frames=8, width=160, height=96))[0]
    head = PoseHead(get_preset("tiny"))
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    errors = []
    for _ in range(60):
        points, visible, heatmaps = head.predict(window["frames"])
        loss, stats = pose_loss(points, visible, window["points"], window["visibility"], heatmaps, (160, 96))
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(stats["coord_l1"] * 96)  # canvas units -> pixels (x + y)
    assert errors[0] > 10
    assert errors[-1] < 3, errors[-1]
