"""The hand evaluator: how well-formed a drawn hand looks (the reward of hand feedback learning).

A small conv net scores a square crop around one hand of a low-res frame —
the video LR-A2V makes — with the logit of "a good hand" (five fingers,
joints where they belong, an intact palm). It is trained on the procedural
good/broken pairs (engine/data/hand_pairs.py). Crops are resized to a fixed
input size, so the net is the same for every preset; the crop's side in LR
pixels comes from the config (a quarter of the frame height holds a hand).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import Config
from engine.models.vae import ResBlock

INPUT = 32  # pixels of the square the crops are resized to


def hand_crop_pixels(config: Config) -> int:
    """Side of a hand crop in LR pixels."""
    return config.lr.height // 4


class HandEvaluator(nn.Module):
    def __init__(self, config: Config, width: int = 32) -> None:
        super().__init__()
        self.crop = hand_crop_pixels(config)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.SiLU(),
            ResBlock(width),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),  # 16 x 16
            ResBlock(2 * width),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),  # 8 x 8
            ResBlock(2 * width),
            nn.SiLU(),
        )
        self.head = nn.Linear(2 * width, 1)

    def forward(self, crops: Tensor) -> Tensor:
        """crops [N, 3, S, S] in [0, 1] (any S) -> logits [N] of "a well-formed hand"."""
        x = F.interpolate(crops, size=(INPUT, INPUT), mode="bilinear", align_corners=False)
        features = self.net(x * 2 - 1).mean(dim=(2, 3))
        return self.head(features).squeeze(-1)

    def reward(self, crops: Tensor) -> Tensor:
        """r_hand in [0, 1] per crop (differentiable in the crops)."""
        return torch.sigmoid(self(crops))
