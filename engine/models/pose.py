"""The pose head: keypoints of low-res frames, for the refiner's pose tensor at inference.

It reads decoded LR frames (RGB), not LR latents: the pipeline decodes the LR
video anyway (DESIGN data flow), and a head on pixels is trained straight on
the procedural ground truth and survives any retraining of the autoencoder.
A small conv net predicts one heatmap per keypoint at 1/4 resolution; a
soft-argmax turns each into coordinates (differentiable, sub-pixel), and a
pooled logit gives its visibility.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import Config
from engine.data import keypoints as kp
from engine.models.vae import ResBlock


class PoseHead(nn.Module):
    def __init__(self, config: Config, width: int = 64) -> None:
        super().__init__()
        self.config = config
        self.keypoints = kp.NUM_KEYPOINTS
        self.features = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            ResBlock(width),
            ResBlock(width),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.SiLU(),
            ResBlock(width),
        )
        self.heatmaps = nn.Conv2d(width, self.keypoints, 1)
        self.visible = nn.Conv2d(width, self.keypoints, 1)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """frames [N, 3, H, W] in [0, 1] -> keypoints [N, K, 2] (canvas units), visibility logits [N, K]."""
        N, _, H, W = frames.shape
        feats = self.features(frames * 2 - 1)
        logits = self.heatmaps(feats)  # [N, K, h, w]
        h, w = logits.shape[-2:]
        prob = logits.flatten(2).softmax(-1).view(N, self.keypoints, h, w)
        # Cell centres in canvas units (y from the top, x from the image centre, height = 1).
        ys = (torch.arange(h, device=frames.device, dtype=prob.dtype) + 0.5) / h
        xs = ((torch.arange(w, device=frames.device, dtype=prob.dtype) + 0.5) / w - 0.5) * (W / H)
        y = (prob.sum(-1) * ys).sum(-1)
        x = (prob.sum(-2) * xs).sum(-1)
        visible = F.adaptive_max_pool2d(self.visible(feats) + logits, 1).flatten(1)
        return torch.stack((x, y), dim=-1), visible


def pose_loss(
    pred: Tensor, visible_logits: Tensor, target: Tensor, visibility: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """L1 on visible keypoints (canvas units) + BCE on visibility."""
    mask = visibility > 0.5
    coord = (pred - target).abs().sum(-1)[mask].mean() if mask.any() else pred.sum() * 0
    vis = F.binary_cross_entropy_with_logits(visible_logits, visibility.float())
    return coord + 0.1 * vis, {"coord_l1": float(coord.detach()), "visibility_bce": float(vis.detach())}
