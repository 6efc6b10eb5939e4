"""The mouth judge: a second, independent reader of the mouth opening, for measuring lip sync.

A generator trained against a reader learns what that reader likes (a lip loss through the pose
head's reader raised its lip-sync number while the whole frame's colour swung with speech). So the
measure has its own reader, which no loss reads: the generators learn the mouth from pixels against
the true frames (engine.training.generators), and this module is built only by its own training
task and by the evaluations.

It differs from the pose head's reader on purpose: its own seed (JUDGE_SEED), a wider crop (3 eye
distances, 32 samples), each crop normalised per channel (mean and spread removed: a global change
of colour or brightness cannot move it), GroupNorm conv stages with average pooling and an MLP
head; it is trained only on rendered frames, with photometric jitter, blur and noise (so that it
reads softer generated frames), never on the autoencoder's reconstructions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.config import Config
from engine.models.pose import mouth_crops

JUDGE_SEED = 20_261_130  # its initial weights: not the pose head's
JUDGE_CROP_EYES = 3.0
JUDGE_CROP_SAMPLES = 32


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.GELU(), nn.AvgPool2d(2)
    )


class MouthJudge(nn.Module):
    """frames + lip keypoints -> the mouth opening each frame shows (0 closed, 1 wide)."""

    def __init__(self, config: Config, width: int = 32) -> None:
        super().__init__()
        self.config = config
        generator = torch.random.fork_rng()
        with generator:
            torch.manual_seed(JUDGE_SEED)
            self.features = nn.Sequential(_stage(3, width), _stage(width, width), _stage(width, 2 * width))
            self.head = nn.Sequential(nn.Linear(2 * width * 16, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, crops: Tensor) -> Tensor:
        """crops [N, 3, 32, 32] (mouth_crops) -> opening [N]."""
        mean = crops.mean((2, 3), keepdim=True)
        spread = crops.std((2, 3), keepdim=True).clamp_min(0.02)
        x = self.features((crops - mean) / spread)  # [N, 2w, 4, 4]
        return self.head(x.flatten(1)).squeeze(-1)

    def read(self, frames: Tensor, points: Tensor) -> Tensor:
        """frames [N, 3, H, W] in [0, 1], lip keypoints [N, K, 2] (canvas units) -> opening [N]."""
        crops = mouth_crops(frames, points.detach(), eyes_wide=JUDGE_CROP_EYES, samples=JUDGE_CROP_SAMPLES)
        return self(crops)
