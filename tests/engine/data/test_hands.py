"""Broken hands: each fault changes the drawn hand, and only the hand."""

import dataclasses

import numpy as np
import pytest
import torch

from engine.config import TimeBase
from engine.data.hand_pairs import HandPairs, as_labelled
from engine.data.hands import FAULTS, HandFault
from engine.data.identity import sample_identity
from engine.data.motion import OPEN_CURL, motion_from_audio
from engine.data.render import Label, render
from engine.data.skeleton import pose_from_motion
from engine.pose import keypoints as kp

W, H = 640, 352


@pytest.fixture(scope="module")
def raised_hands():
    time = TimeBase()
    motion = motion_from_audio(np.zeros(time.samples_per_frame), 4, time)
    motion = dataclasses.replace(
        motion,
        wrist=torch.tensor([[0.6, -0.3], [0.6, -0.3]])[None],
        hand_angle=torch.zeros(1, 2),
        curls=torch.tensor([OPEN_CURL, OPEN_CURL])[None],
    )
    identity = sample_identity(4)
    pose = pose_from_motion(identity, motion)
    return identity, pose, render(identity, pose, W, H)


@pytest.mark.parametrize("kind", FAULTS)
def test_each_fault_changes_only_the_hand(raised_hands, kind: str) -> None:
    identity, pose, good = raised_hands
    bad = render(identity, pose, W, H, {"r": HandFault(kind, 2, 0.7)})
    changed = (bad.image - good.image).abs().amax(dim=1)[0] > 1e-6  # [H, W]
    assert changed.sum() > 20, kind
    ys, xs = torch.nonzero(changed, as_tuple=True)
    hand = kp.to_pixels(pose.points[0, kp.part("hand_r")], W, H)
    reach = 1.2 * identity.hand_size * H  # a palm length around the keypoints
    assert xs.min() >= hand[:, 0].min() - reach and xs.max() <= hand[:, 0].max() + reach
    assert ys.min() >= hand[:, 1].min() - reach and ys.max() <= hand[:, 1].max() + reach
    assert torch.equal(bad.image[..., : W // 2], good.image[..., : W // 2])  # the left hand is untouched


def test_missing_and_fused_fingers_remove_a_finger_label(raised_hands) -> None:
    identity, pose, good = raised_hands
    assert (good.labels == Label.FINGER_R + 2).any()
    missing = render(identity, pose, W, H, {"r": HandFault("missing_finger", 2, 0.5)})
    assert not (missing.labels == Label.FINGER_R + 2).any()
    fused = render(identity, pose, W, H, {"r": HandFault("fused", 2, 0.5)})
    assert not (fused.labels == Label.FINGER_R + 3).any()


def test_hand_pairs_are_labelled_crops_of_the_same_frame() -> None:
    pairs = list(HandPairs([3], pairs_per_seed=3, width=640, height=352, crop=64, seconds=1.0))
    assert len(pairs) == 3
    for pair in pairs:
        assert pair["good"].shape == pair["bad"].shape == (3, 64, 64)
        assert pair["fault"] in FAULTS
        assert (pair["good"] - pair["bad"]).abs().amax() > 0.05  # the fault is visible in the crop
    samples = list(as_labelled(iter(pairs)))
    assert [label for _, label in samples] == [1, 0] * 3
