"""Good/broken hand pairs for the hand evaluator: the same frame drawn twice, cropped on one hand.

Frames come from real clips (speech-driven motion, so hands are in every pose
the generator will produce); one hand of the frame is broken with a random
fault and both versions are cropped around that hand.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from engine.config import TimeBase
from engine.data.hands import sample_fault
from engine.data.identity import sample_identity
from engine.data.motion import motion_from_audio
from engine.data.render import render
from engine.data.skeleton import Pose, pose_from_motion, visibility
from engine.data.speech import speech_take
from engine.pose import keypoints as kp


def hand_crop(image: Tensor, pose: Pose, hand: str, size: int) -> Tensor:
    """A size x size crop [3, size, size] of image [3, H, W] centred on a hand (clamped to the image)."""
    _, H, W = image.shape
    center = kp.to_pixels(pose.points[0, kp.part(f"hand_{hand}")], W, H).mean(0)
    x0 = int(center[0]) - size // 2
    y0 = int(center[1]) - size // 2
    x0, y0 = max(0, min(W - size, x0)), max(0, min(H - size, y0))
    return image[:, y0 : y0 + size, x0 : x0 + size]


class HandPairs(IterableDataset):
    """Yields {"good", "bad": [3, crop, crop] float, "fault": str, "hand": "l"|"r", "identity": int}."""

    def __init__(
        self,
        seeds: Sequence[int],
        pairs_per_seed: int,
        width: int,
        height: int,
        crop: int,
        seconds: float = 4.0,
    ) -> None:
        self.seeds, self.pairs_per_seed = list(seeds), pairs_per_seed
        self.width, self.height, self.crop, self.seconds = width, height, crop, seconds

    def __iter__(self) -> Iterator[dict[str, Tensor | str | int]]:
        info = get_worker_info()
        seeds = self.seeds if info is None else self.seeds[info.id :: info.num_workers]
        time = TimeBase()
        for seed in seeds:
            rng = random.Random(seed)
            identity = sample_identity(seed)
            audio = speech_take(seed, self.seconds, time.sample_rate)
            pose = pose_from_motion(identity, motion_from_audio(audio, seed, time))
            made = 0
            for _ in range(20 * self.pairs_per_seed):  # frames with no hand in view are skipped
                if made == self.pairs_per_seed:
                    break
                frame = pose.slice(i := rng.randrange(pose.frames), i + 1)
                seen = visibility(frame.points[0], self.width, self.height)
                hands = [h for h in "lr" if seen[kp.part(f"hand_{h}")].mean() >= 0.9]
                if not hands:
                    continue
                hand = rng.choice(hands)
                made += 1
                fault = sample_fault(rng)
                good = render(identity, frame, self.width, self.height).image[0]
                bad = render(identity, frame, self.width, self.height, {hand: fault}).image[0]
                yield {
                    "good": hand_crop(good, frame, hand, self.crop),
                    "bad": hand_crop(bad, frame, hand, self.crop),
                    "fault": fault.kind,
                    "hand": hand,
                    "identity": seed,
                }


def as_labelled(pairs: Iterator[dict[str, Tensor | str | int]]) -> Iterator[tuple[Tensor, int]]:
    """(crop, label) samples from pairs: 1 = good hand, 0 = broken."""
    for pair in pairs:
        yield pair["good"], 1  # type: ignore[misc]
        yield pair["bad"], 0  # type: ignore[misc]
