"""PG-Refiner: the pose-guided DiT that turns low-res motion into high-res video.

Input tokens are `[prefix E(I_ref) (never noised) | optional previous HR latents
(clean, for continuity between chunks) | HR latents (noisy)]`. Conditions:

- the degraded LR latent `z_deglr = LPF(z_lr) + a_deg * eps` (degradation.py),
  resampled to the HR latent grid and injected into the noisy frames' tokens;
- the 8-channel pose tensor P', projected by a learned patch projection and
  added to the same tokens: `z'_hr = z_hr + Proj(P')`;
- optional text, through the DiT's text cross-attention.

The network estimates the clean HR latents as **the clean LR latents resampled to the HR grid
plus what it adds** (`x_hat = up(z_lr) + DiT(...)`, as LR-A2V starts from the still reference;
the velocity follows from the estimate, engine.flow.velocity_from_estimate): a fresh refiner is an
upscaler of the LR video, and training adds the detail the LR video cannot hold. The resampling
is in latent space, bilinear, with the engine's framing (the LR frame is the centre of the HR one,
media.image.cover; cells beyond it repeat the LR border): encoding upscaled LR frames instead would
cost an HR encode per segment, more than the refiner itself at the tiny size, for the same PSNR
against the HR frames (23.4 dB both, demo autoencoder). It samples with one Euler step
(flow.refiner_steps = 1), which from t = 0 is the estimate itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import Config
from engine.flow import Guidance, VelocityFn
from engine.media.image import cover_box
from engine.models.conditions import SegmentConditions, check_shape, guided_velocity
from engine.models.dit import DiT, patchify
from engine.models.text import ByteTextEncoder, TextTokens

CONDITIONS = ("reference", "pose", "lr", "text")
"""Droppable conditions, in guidance order."""


@dataclass(frozen=True)
class RefinerConditions(SegmentConditions):
    """What one refiner chunk is conditioned on.

    prefix [B, C, P, H, W]: the reference latent E(I_ref) at HR.
    motion [B, C, M, H, W]: clean HR latents from the previous chunk (M may be 0).
    lr [B, C, N, h, w]: the degraded LR latents of the N frames to refine.
    pose [B, 8, s*N, Hp, Wp]: the pose tensor of their s*N video frames (s = VAE temporal stride).
    text: byte tokens (the empty text when there is none).
    lr_clean [B, C, N, h, w]: the same LR latents undegraded, where the estimate starts (resampled
    to the HR grid). Not a condition: never dropped, so guidance never scales it.
    """

    DROPPABLE: ClassVar[Mapping[str, str]] = {
        "reference": "prefix",
        "pose": "pose",
        "lr": "lr",
        "text": "text",
    }

    lr: Tensor
    pose: Tensor
    text: TextTokens
    lr_clean: Tensor


def lr_on_hr_grid(lr: Tensor, config: Config) -> Tensor:
    """LR latents [B, C, N, h, w] -> [B, C, N, H, W] on the HR latent grid, bilinear, where each HR
    cell samples the LR place that shows the same part of the picture (the LR frame is the HR frame
    framed by media.image.cover; cells outside it take the LR border)."""
    B, C, frames, h, w = lr.shape
    H, W = config.hr_latent_grid
    hr, lr_res = config.hr, config.lr
    sw, sh, left, top = cover_box(hr.width, hr.height, lr_res.width, lr_res.height)
    opts = {"device": lr.device, "dtype": torch.float32}
    # HR cell centres in HR pixels -> LR pixels -> grid_sample's [-1, 1] over the LR frame.
    xs = ((torch.arange(W, **opts) + 0.5) * (hr.width / W) * (sw / hr.width) - left) / lr_res.width * 2 - 1
    ys = ((torch.arange(H, **opts) + 0.5) * (hr.height / H) * (sh / hr.height) - top) / lr_res.height * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    images = lr.permute(0, 2, 1, 3, 4).reshape(B * frames, C, h, w)
    grid = grid[None].expand(B * frames, -1, -1, -1).to(lr.dtype)
    up = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return up.view(B, frames, C, H, W).permute(0, 2, 1, 3, 4)


class PGRefiner(nn.Module):
    """Degraded LR latent + pose (+ reference, + text) -> HR latent video, estimated from the LR one."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        cfg = config.refiner
        self.text_encoder = ByteTextEncoder(config.text)
        self.dit = DiT(
            cfg,
            in_channels=config.latent_channels,
            out_channels=config.latent_channels,
            text_dim=config.text.dim,
            audio_dim=None,
        )
        # Pose: one token's footprint of P' (a temporal stride of frames x the token's pixels).
        pose_k = config.time.vae_spatial_stride * cfg.patch[1] // config.pose.stride
        pose_kernel = (config.time.vae_temporal_stride, pose_k, pose_k)
        self.pose_proj = nn.Conv3d(
            config.pose.channels, cfg.width, pose_kernel, stride=pose_kernel, bias=False
        )
        # LR: patches of the LR latent after resampling to the HR latent grid. A learned
        # linear map of an aligned patch is what channel-concatenation with z_hr would
        # give (concat + patch embedding = sum of two patch embeddings), and keeping it
        # separate lets a dropped (zero) condition contribute exactly nothing.
        self.lr_proj = nn.Linear(config.latent_channels * cfg.patch_volume, cfg.width, bias=False)
        # Condition projections start at zero (as ControlNet's): a pretrained video DiT
        # fine-tuned into the refiner starts from its own behaviour.
        nn.init.zeros_(self.pose_proj.weight)
        nn.init.zeros_(self.lr_proj.weight)

    def condition_tokens(self, lr: Tensor, pose: Tensor) -> Tensor:
        """Tokens [B, N*h*w, W] to add to the noisy frames: Proj(P') + Proj_lr(upsample(z_deglr))."""
        # Resampled in latent space, every LR cell lands on the HR cells of the same image area
        # (the grids differ by a non-integer factor and, at the tiny size, by their framing).
        up = lr_on_hr_grid(lr, self.config)  # [B, C, N, H, W]
        lr_tokens = self.lr_proj(patchify(up, self.config.refiner.patch))  # [B, N*h'*w', W]
        pose_tokens = self.pose_proj(pose).flatten(2).transpose(1, 2)  # [B, N*h'*w', W]
        return lr_tokens + pose_tokens

    def _check(self, noisy: Tensor, cond: RefinerConditions) -> None:
        c = self.config
        B, C, N = noisy.shape[0], c.latent_channels, noisy.shape[2]
        for name, x in (("prefix", cond.prefix), ("motion", cond.motion), ("noisy", noisy)):
            check_shape(f"refiner {name} HR latents", x, [B, C, None, *c.hr_latent_grid])
        check_shape("refiner degraded LR latents", cond.lr, [B, C, N, *c.lr_latent_grid])
        check_shape("refiner clean LR latents", cond.lr_clean, [B, C, N, *c.lr_latent_grid])
        pose = [B, c.pose.channels, N * c.time.vae_temporal_stride, *c.pose_size]
        check_shape("refiner pose tensor", cond.pose, pose)

    def forward(
        self, noisy: Tensor, t: Tensor, cond: RefinerConditions, *, all_frames: bool = False
    ) -> Tensor:
        """The clean estimate of the HR latents: `cond.lr_clean` on the HR grid plus the DiT's output.

        noisy [B, C, N, H, W]: HR latents on the flow path at time t [B]. The DiT sees
        [cond.prefix | cond.motion | noisy] with flow time 1 on the clean context and
        the condition tokens added to the noisy frames. Returns [B, C, N, H, W], or
        every frame with all_frames (training; context frames, their own latents plus the
        output, have loss weight 0).
        """
        self._check(noisy, cond)
        layout = cond.layout(noisy.shape[2])
        x = torch.cat([cond.prefix, cond.motion, noisy], dim=2)  # [B, C, P+M+N, H, W]
        base = lr_on_hr_grid(cond.lr_clean, self.config)  # [B, C, N, H, W]
        if all_frames:
            base = torch.cat([cond.prefix, cond.motion, base], dim=2)
        return base + self.dit(
            x,
            layout.frame_times(t),
            layout,
            text=self.text_encoder(cond.text),
            text_lens=cond.text.lens,
            token_cond=self.condition_tokens(cond.lr, cond.pose),
            out_frames=None if all_frames else layout.new,
        )

    def velocity(self, cond: RefinerConditions, guidance: Guidance | None = None) -> VelocityFn:
        """The sampler's velocity function for the HR frames of one chunk (from the estimate)."""
        return guided_velocity(self, cond, guidance)
