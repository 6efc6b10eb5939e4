"""The pose head: keypoints of low-res frames, for the refiner's pose tensor at inference.

It reads decoded LR frames (RGB), not LR latents: the pipeline decodes the LR
video anyway (DESIGN data flow), and a head on pixels is trained straight on
the procedural ground truth and survives any retraining of the autoencoder.
A small conv net predicts one heatmap per keypoint at 1/4 resolution; a
soft-argmax turns each into coordinates (differentiable, sub-pixel), and a
pooled logit gives its visibility.

It also reads the mouth opening of each frame: at the LR size the lips are
a pixel or two apart, so the lip keypoints' spread is mostly their error
(held-out: r = 0.1 to 0.8 against the truth), while the darkness of the
mouth cavity is still visible. A small conv net, the mouth reader, reads a
crop around the lips the head found (sized by the eye distance, sampled at
about twice the LR resolution) and max-pools what it sees, so a crop placed a
pixel off reads the same (`ihuman train mouth` trains it on jittered true
keypoints after the head). `ihuman eval lipsync` measures generated video
with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import Config
from engine.models.vae import ResBlock
from engine.pose import keypoints as kp


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
        # Defined last: parameters added after the keypoint layers keep an older checkpoint's
        # optimizer state in order.
        self.mouth = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width // 2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

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
        points, visible, _ = self.predict(frames)  # no mouth reading: the live stages need none
        return points, visible

    def mouth_opening(
        self, frames: Tensor, points: Tensor | None = None, max_side: float | None = None
    ) -> Tensor:
        """frames [N, 3, H, W] in [0, 1] -> the mouth opening [N] each frame shows (0 closed, 1 wide),
        read around the lips of `points` [N, K, 2] (default: the keypoints the head finds)."""
        if points is None:
            points = self.predict(frames)[0]
        # The crop's place comes from detached keypoints: the reader's loss cannot move them.
        return self.mouth(mouth_crops(frames, points.detach(), max_side)).squeeze(-1)

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


MOUTH_CROP_EYES = 2.5  # side of the mouth crop in eye distances
MOUTH_CROP_SAMPLES = 24  # its side in samples


def mouth_crops(
    frames: Tensor,
    points: Tensor,
    max_side: float | None = None,
    eyes_wide: float = MOUTH_CROP_EYES,
    samples: int = MOUTH_CROP_SAMPLES,
) -> Tensor:
    """Square crops [N, 3, S, S] (S = samples) of frames [N, 3, H, W] centred on the lips of points
    [N, K, 2], `eyes_wide` eye distances and at most `max_side` pixels wide (default H / 2; a caller
    reading a window of a frame passes the whole frame's bound, so the window crops as the frame
    would)."""
    N, _, H, W = frames.shape
    pixels = kp.to_pixels(points, W, H)
    centre = pixels[:, kp.LIPS].mean(1)  # [N, 2]
    eyes = pixels[:, kp.index("face", "eye_l")] - pixels[:, kp.index("face", "eye_r")]
    side = (eyes.norm(dim=-1) * eyes_wide).clamp(4.0, H / 2 if max_side is None else max_side)
    theta = torch.zeros(N, 2, 3, device=frames.device, dtype=frames.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = side / W, side / H
    theta[:, 0, 2], theta[:, 1, 2] = centre[:, 0] / W * 2 - 1, centre[:, 1] / H * 2 - 1
    grid = F.affine_grid(theta, [N, 3, samples, samples], align_corners=False)
    return F.grid_sample(frames * 2 - 1, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
