"""The reference's own detail where the picture has not moved.

The autoencoder blurs what it reconstructs (30.7 dB on held-out procedural frames; a photo's eyes
and glasses soften), so a frame decoded from generated latents is never sharper than the decoder's
round trip of the reference, even where nothing moved. But the reference is known exactly, and so
is what the decoder makes of it held still: where a generated frame still matches that still
decode, the difference between reference and still decode is the decoder's error at that place,
and adding it back gives the reference's own pixels. Where the frame has moved away from the still
decode (a mouth opening, a turning head, a hand), the reference's detail would sit in the wrong
place, so the frame stays as generated; between the two, the share fades with the change.

A generator that keeps the picture still therefore streams the reference exactly, and what it
moves shows as it generated it. The change is measured per pixel (the largest of the three
channels), widened by a block of `reach` pixels so that the reference's detail does not ring along
the edges of what moved, then softened over as much.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


class DetailTransfer:
    """For one session and one resolution: the reference and the decoder's still frames of it.

    picture: float [3, H, W] in [0, 1], the reference at this resolution (what the encoder saw).
    still: float [P, 3, H, W], the frames the decoder makes of the still latent, one per position
    within a latent frame (the decoder unfolds each latent into P frames, not always alike).
    tolerance: a change from the still frame this large (0-1 scale, the config's
    segment.detail_tolerance) keeps the pixel as generated.
    lead: float [P, 3, H, W], the still latent's frames when it is the first the decoder sees after
    the prefix and history it was primed with (its memory still holds them); the first P frames the
    transfer sees use them.
    """

    def __init__(
        self, picture: Tensor, still: Tensor, tolerance: float, reach: int = 2, lead: Tensor | None = None
    ) -> None:
        if (
            still.dim() != 4
            or still.shape[1:] != picture.shape
            or (lead is not None and lead.shape != still.shape)
        ):
            shapes = f"{list(still.shape)} against {list(picture.shape)}"
            raise ValueError(f"the still frames do not match the picture: {shapes}")
        self.still, self.lead = still, lead
        # The decoder's error, per position (and for the lead): what a frame that did not move gets.
        self.residual = picture[None] - still
        self.lead_residual = None if lead is None else picture[None] - lead
        self.tolerance, self.reach = tolerance, reach

    def weight(self, frames: Tensor, still: Tensor) -> Tensor:
        """[T, 1, H, W] in [0, 1]: how much of the reference's detail each pixel of `frames` takes
        against the still frames `still` [T, 3, H, W] (1 = unmoved)."""
        change = (frames - still).abs().amax(1, keepdim=True)
        if self.reach:
            # On blocks of `reach` pixels: widened by a block each way, softened over as many, then
            # back to pixels (a 5x5 max filter on every pixel cost 24 ms a segment at 320x176 on two
            # CPU cores, this 2 ms).
            H, W = change.shape[-2:]
            blocks = F.max_pool2d(change, self.reach, ceil_mode=True) if self.reach > 1 else change
            blocks = F.max_pool2d(blocks, 3, stride=1, padding=1)
            blocks = F.avg_pool2d(blocks, 3, stride=1, padding=1, count_include_pad=False)
            change = F.interpolate(blocks, size=(H, W), mode="bilinear", align_corners=False)
        return (1 - change / self.tolerance).clamp(0, 1)

    def apply(self, frames: Tensor) -> Tensor:
        """frames float [T, 3, H, W] in [0, 1], the stream's next frames, decoded from whole latent
        frames -> the same with the reference's detail where they did not move."""
        positions = torch.arange(frames.shape[0], device=frames.device) % self.still.shape[0]
        still, residual = self.still[positions], self.residual[positions]
        if self.lead is not None and self.lead_residual is not None:
            P = min(self.lead.shape[0], frames.shape[0])
            still = torch.cat([self.lead[:P], still[P:]])
            residual = torch.cat([self.lead_residual[:P], residual[P:]])
            self.lead = self.lead_residual = None
        return (frames + self.weight(frames, still) * residual).clamp(0, 1)


@torch.no_grad()
def still_detail(
    decode: Callable[[Tensor], Tensor],
    picture: Tensor,
    still_latent: Tensor,
    stride: int,
    tolerance: float,
    with_lead: bool,
) -> DetailTransfer | None:
    """The transfer for a stream whose decoder turns latents into frames with `decode` (from the
    memory it has now, not advancing it). The still latent [1, C, 1, h, w] is decoded twice: the
    second time gives the settled frames; the first, the lead when `with_lead` (the stream's next
    latent is its first from that memory). None when off (tolerance 0)."""
    if tolerance <= 0:
        return None
    video = (
        decode(still_latent.expand(-1, -1, 2, -1, -1))[0].transpose(0, 1).clamp(0, 1)
    )  # [2 stride, 3, H, W]
    lead = video[:stride] if with_lead else None
    return DetailTransfer(picture[0].to(video), video[stride:], tolerance, lead=lead)
