"""The procedural characters: determinism, keypoints on the drawn parts, mouth, hands, pose tensor."""

import dataclasses

import numpy as np
import pytest
import torch

from engine.config import TimeBase
from engine.data.identity import sample_identity
from engine.data.motion import OPEN_CURL, motion_from_audio
from engine.data.render import Label, render
from engine.data.skeleton import pose_from_motion
from engine.data.speech import speech_take
from engine.pose import keypoints as kp
from engine.pose.pose_tensor import STROKES, pose_tensor

TIME = TimeBase()
W, H = 640, 352


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_take(seed=5, seconds=4.0, sample_rate=TIME.sample_rate)


def _frames(seed: int, audio: np.ndarray, width: int = W, height: int = H):
    motion = motion_from_audio(audio, seed, TIME)
    pose = pose_from_motion(sample_identity(seed), motion)
    return motion, pose, render(sample_identity(seed), pose, width, height)


def test_same_seed_gives_identical_frames(speech: np.ndarray) -> None:
    clip = speech[: TIME.sample_rate]
    _, _, a = _frames(3, clip)
    _, _, b = _frames(3, clip)
    _, _, c = _frames(4, clip)
    assert torch.equal(a.image, b.image)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.image, c.image)
    assert sample_identity(3) == sample_identity(3) != sample_identity(4)


def test_silence_gives_a_closed_mouth() -> None:
    silence = np.zeros(2 * TIME.sample_rate, dtype=np.float32)
    motion, _, frames = _frames(1, silence)
    assert torch.equal(motion.mouth_open, torch.zeros_like(motion.mouth_open))
    inner = (frames.labels == Label.CAVITY) | (frames.labels == Label.TEETH) | (frames.labels == Label.TONGUE)
    assert inner.sum() == 0


@pytest.mark.slow
def test_cavity_area_tracks_mouth_opening(speech: np.ndarray) -> None:
    for seed in (0, 7):
        motion, _, frames = _frames(seed, speech)
        area = (frames.labels == Label.CAVITY).flatten(1).sum(1).float()
        assert motion.mouth_open.max() > 0.5 and (motion.mouth_open == 0).any()
        corr = torch.corrcoef(torch.stack((area, motion.mouth_open)))[0, 1]
        assert corr > 0.95, (seed, float(corr))


def test_fingertips_land_on_the_drawn_fingers() -> None:
    silence = np.zeros(TIME.sample_rate // 5, dtype=np.float32)
    motion = motion_from_audio(silence, 2, TIME)
    T = motion.frames
    # Both hands raised, open, fingers up (palms to the camera): every finger is visible.
    motion = dataclasses.replace(
        motion,
        wrist=torch.tensor([[0.6, -0.3], [0.6, -0.3]]).expand(T, 2, 2),
        hand_angle=torch.zeros(T, 2),
        curls=torch.tensor([OPEN_CURL, OPEN_CURL]).expand(T, 2, 5),
    )
    identity = sample_identity(2)
    pose = pose_from_motion(identity, motion)
    frames = render(identity, pose, 1280, 720)
    for hand, first_label in (("hand_l", Label.FINGER_L), ("hand_r", Label.FINGER_R)):
        points = kp.to_pixels(pose.points[0, kp.part(hand)], 1280, 720)
        for f, tip in enumerate(kp.FINGERTIPS):
            ys, xs = torch.nonzero(frames.labels[0] == first_label + f, as_tuple=True)
            assert len(xs) > 0, (hand, f)
            pixels = torch.stack((xs.float() + 0.5, ys.float() + 0.5), -1)
            # The finger pixel farthest along the last bone is its drawn tip.
            base, end = points[tip - 1], points[tip]
            direction = (end - base) / (end - base).norm()
            drawn_tip = pixels[((pixels - base) @ direction).argmax()]
            along = float((drawn_tip - end) @ direction)
            assert abs(along) <= 2.0, (hand, f, along)


def test_pose_tensor_channels_match_keypoints(speech: np.ndarray) -> None:
    _, pose, _ = _frames(0, speech[: TIME.sample_rate])
    width, height = 160, 88
    P = pose_tensor(pose.points, width, height)
    assert P.shape == (8, pose.frames, height, width)
    pixels = kp.to_pixels(pose.points, width, height).long()
    for channel, pairs in enumerate(STROKES):
        for a, _ in pairs:
            x, y = pixels[:, a, 0], pixels[:, a, 1]
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            t = torch.nonzero(inside).flatten()
            assert (P[channel, t, y[t], x[t]] > 0.3).all(), (channel, a)
    # A hand channel is empty where no hand is: around the eyes.
    eye = pixels[:, kp.index("face", "eye_l")]
    t = torch.arange(pose.frames)
    assert (P[3, t, eye[:, 1], eye[:, 0]] == 0).all()
    assert (P[6, t, eye[:, 1], eye[:, 0]] == 0).all()
