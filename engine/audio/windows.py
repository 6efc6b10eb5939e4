"""Cut per-video-frame audio features into the windows each latent frame attends to."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from engine.config import Config
from engine.exceptions import InputShapeError


def latent_audio_windows(features: Tensor, first_frame: int, latents: int, config: Config) -> Tensor:
    """Audio windows [B, latents, A, D] for `latents` consecutive latent frames.

    features [B, T, D]: one feature vector per video frame, frame 0 first.
    Latent frame j covers video frames [first_frame + s*j, first_frame + s*(j+1))
    with s the VAE's temporal stride; its window adds `left_context_frames` before
    and `lookahead_frames` after, so A = s + left + lookahead. Frames outside
    [0, T) (before the stream starts or not yet heard) are zeros, the same as
    dropped audio.
    """
    if features.dim() != 3:
        raise InputShapeError(f"audio features: expected [B, T, D], got {list(features.shape)}")
    stride = config.time.vae_temporal_stride
    left, ahead = config.audio.left_context_frames, config.audio.lookahead_frames
    window = config.audio_tokens_per_latent
    start = first_frame - left  # first video frame of the first window
    stop = first_frame + stride * latents + ahead  # one past the last frame of the last window
    total = features.shape[1]
    pad_before, pad_after = max(0, -start), max(0, stop - total)
    span = features[:, max(0, start) : min(total, stop)]
    span = F.pad(span, (0, 0, pad_before, pad_after))  # [B, stop - start, D]
    return span.unfold(1, window, stride).transpose(2, 3)  # [B, latents, A, D]
