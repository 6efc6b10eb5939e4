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
    """Heatmaps at 1/4 resolution from local features plus a 1/16 context branch.

    Two input channels carry each pixel's position (CoordConv): image-left and
    image-right parts (eyes, arms, hands) look alike locally, and without them a
    heatmap splits between the two and the soft-argmax lands in the middle. The
    context branch sees the whole figure, which places the parts that are
    small or hidden at the LR size.
    """

    def __init__(self, config: Config, width: int = 64) -> None:
        super().__init__()
        self.config = config
        self.keypoints = kp.NUM_KEYPOINTS
        self.local = nn.Sequential(
            nn.Conv2d(3 + 2, width // 2, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            ResBlock(width),
            ResBlock(width),
        )
        self.context = nn.Sequential(
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            ResBlock(width),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            ResBlock(width),
            ResBlock(width),
        )
        self.merge = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.SiLU(), ResBlock(width))
        self.heatmaps = nn.Conv2d(width, self.keypoints, 1)
        self.visible = nn.Conv2d(width, self.keypoints, 1)

    def heatmap_logits(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """frames [N, 3, H, W] in [0, 1] -> heatmap logits [N, K, H/4, W/4] and their features."""
        N, _, H, W = frames.shape
        ys = torch.linspace(-1, 1, H, device=frames.device, dtype=frames.dtype)[:, None].expand(H, W)
        xs = torch.linspace(-1, 1, W, device=frames.device, dtype=frames.dtype)[None, :].expand(H, W)
        coords = torch.stack((xs, ys))[None].expand(N, 2, H, W)
        local = self.local(torch.cat([frames * 2 - 1, coords], dim=1))
        context = F.interpolate(
            self.context(local), size=local.shape[-2:], mode="bilinear", align_corners=False
        )
        feats = self.merge(torch.cat([local, context], dim=1))
        return self.heatmaps(feats), feats

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """frames [N, 3, H, W] in [0, 1] -> keypoints [N, K, 2] (canvas units), visibility logits [N, K]."""
        points, visible, _ = self.predict(frames)
        return points, visible

    def predict(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """forward, plus the heatmap logits [N, K, h, w] (training supervises them too)."""
        N, _, H, W = frames.shape
        logits, feats = self.heatmap_logits(frames)
        h, w = logits.shape[-2:]
        prob = logits.flatten(2).softmax(-1).view(N, self.keypoints, h, w)
        # Cell centres in canvas units (y from the top, x from the image centre, height = 1).
        ys = (torch.arange(h, device=frames.device, dtype=prob.dtype) + 0.5) / h
        xs = ((torch.arange(w, device=frames.device, dtype=prob.dtype) + 0.5) / w - 0.5) * (W / H)
        y = (prob.sum(-1) * ys).sum(-1)
        x = (prob.sum(-2) * xs).sum(-1)
        visible = F.adaptive_max_pool2d(self.visible(feats) + logits, 1).flatten(1)
        return torch.stack((x, y), dim=-1), visible, logits


def heatmap_targets(target: Tensor, grid: tuple[int, int], width: int, height: int) -> Tensor:
    """The heatmap cell [N, K] (flat index) holding each target keypoint [N, K, 2] (canvas units)."""
    h, w = grid
    pixels = kp.to_pixels(target, width, height)
    col = (pixels[..., 0] / width * w).long().clamp(0, w - 1)
    row = (pixels[..., 1] / height * h).long().clamp(0, h - 1)
    return row * w + col


def pose_loss(
    pred: Tensor,
    visible_logits: Tensor,
    target: Tensor,
    visibility: Tensor,
    heatmaps: Tensor | None = None,
    frame_size: tuple[int, int] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """L1 on visible keypoints (canvas units) + BCE on visibility (+ cross-entropy of the heatmaps
    against the cell of each visible keypoint, when given: a sharp signal from the first step,
    where the soft-argmax alone gives a weak one)."""
    mask = visibility > 0.5
    coord = (pred - target).abs().sum(-1)[mask].mean() if mask.any() else pred.sum() * 0
    vis = F.binary_cross_entropy_with_logits(visible_logits, visibility.float())
    loss = coord + 0.1 * vis
    stats = {"coord_l1": float(coord.detach()), "visibility_bce": float(vis.detach())}
    if heatmaps is not None and frame_size is not None and mask.any():
        cells = heatmap_targets(target, heatmaps.shape[-2:], *frame_size)
        ce = F.cross_entropy(heatmaps.flatten(2)[mask], cells[mask])
        loss = loss + 0.05 * ce
        stats["heatmap_ce"] = float(ce.detach())
    return loss, stats
