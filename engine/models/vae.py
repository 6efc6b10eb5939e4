"""The causal video autoencoder: spatial /8, temporal /4 with the first frame alone.

In the spirit of tiny autoencoders for video diffusion (TAEHV): per-frame 2D
conv stacks do the spatial work; time is handled at the latent rate only,
by folding 4 frames into channels (encoder) or unfolding channels into 4
frames (decoder), plus a "memory" block that sees the previous latent
frame's features. That is the only state crossing latent frames, so
streaming (chunk by chunk, with `EncoderState` / `DecoderState`) computes
exactly what a whole-clip pass computes. A clip of 1 + 4k frames gives
1 + k latents; a single image gives one latent (the reference prefix).

The decoder is small because it runs for every output frame at 25 fps:
`decoder_flops_per_frame` counts it (see `ihuman info`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from engine.config import Config
from engine.exceptions import InputShapeError

# ----- blocks --------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class MemBlock(nn.Module):
    """A residual block over [current, previous latent frame] features: the causal temporal link."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(2 * channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(torch.cat([x, past], dim=1)))))


def _frames_to_batch(x: Tensor) -> tuple[Tensor, int]:
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    B, C, T, H, W = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W), B


def _batch_to_frames(x: Tensor, batch: int) -> Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    BT, C, H, W = x.shape
    return x.view(batch, BT // batch, C, H, W).permute(0, 2, 1, 3, 4)


def _shift_past(features: Tensor, previous: Tensor | None) -> Tensor:
    """For [B, C, L, h, w] latent-rate features, the previous frame's features of each (zeros first)."""
    first = torch.zeros_like(features[:, :, :1]) if previous is None else previous[:, :, None]
    return torch.cat([first, features[:, :, :-1]], dim=2)


# ----- encoder -------------------------------------------------------------------------------------


@dataclass
class EncoderState:
    """What a streaming encoder keeps between chunks."""

    started: bool = False  # the first frame (encoded alone) has been seen
    pending: Tensor | None = None  # [B, C, n<4, h, w] frame features waiting for a full group
    previous: Tensor | None = None  # [B, C, h, w] features of the last latent frame


class Encoder(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        chans = config.vae.encoder_channels
        self.stride = config.time.vae_temporal_stride
        self.stem = _conv(3, chans[0] // 2)
        stages, cin = [], chans[0] // 2
        for c in chans:
            stages += [nn.Conv2d(cin, c, 3, stride=2, padding=1), ResBlock(c)]
            cin = c
        self.spatial = nn.Sequential(*stages)
        c = chans[-1]
        self.first = nn.Conv2d(c, c, 1)
        self.fold = nn.Conv2d(self.stride * c, c, 1)  # 4 frames folded into channels
        self.memory = MemBlock(c)
        self.out = _conv(c, config.latent_channels)

    def frame_features(self, frames: Tensor) -> Tensor:
        """[B, 3, T, H, W] in [0, 1] -> [B, C, T, H/8, W/8]."""
        x, B = _frames_to_batch(frames * 2 - 1)
        return _batch_to_frames(self.spatial(self.stem(x)), B)

    def _latents(self, groups: Tensor, state: EncoderState) -> Tensor:
        past = _shift_past(groups, state.previous)
        state.previous = groups[:, :, -1]
        x, B = _frames_to_batch(groups)
        p, _ = _frames_to_batch(past)
        return _batch_to_frames(self.out(self.memory(x, p)), B)

    def encode(self, frames: Tensor, state: EncoderState | None = None) -> tuple[Tensor, EncoderState]:
        """Encode frames [B, 3, T, H, W] (any T when streaming) -> latents [B, C, L, h, w] and state."""
        state = state or EncoderState()
        feats = self.frame_features(frames)
        groups = []
        if not state.started and feats.shape[2] > 0:
            first, _ = _frames_to_batch(feats[:, :, :1])
            groups.append(_batch_to_frames(self.first(first), feats.shape[0]))
            feats = feats[:, :, 1:]
            state.started = True
        if state.pending is not None:
            feats = torch.cat([state.pending, feats], dim=2)
        full = feats.shape[2] // self.stride
        if full:
            B, C, _, h, w = feats.shape
            block = feats[:, :, : full * self.stride].reshape(B, C, full, self.stride, h, w)
            block = block.permute(0, 2, 3, 1, 4, 5).reshape(B * full, self.stride * C, h, w)
            groups.append(_batch_to_frames(self.fold(block), B))
        rest = feats[:, :, full * self.stride :]
        state.pending = rest if rest.shape[2] else None
        if not groups:
            B, _, _, H, W = frames.shape
            return frames.new_zeros(B, self.out.out_channels, 0, H // 8, W // 8), state
        return self._latents(torch.cat(groups, dim=2), state), state


# ----- decoder -------------------------------------------------------------------------------------


@dataclass
class DecoderState:
    started: bool = False  # the first latent (one frame) has been decoded
    previous: Tensor | None = None  # [B, C, h, w] input features of the last latent frame


class Decoder(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        chans = config.vae.decoder_channels
        self.stride = config.time.vae_temporal_stride
        c = chans[0]
        self.inp = _conv(config.latent_channels, c)
        self.memory = MemBlock(c)
        self.first = nn.Conv2d(c, c, 1)
        self.unfold = nn.Conv2d(c, self.stride * c, 1)  # channels unfolded into 4 frames
        stages, cin = [], c
        for cout in chans:
            stages += [ResBlock(cin), nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout)]
            cin = cout
        self.spatial = nn.Sequential(*stages, nn.SiLU(), _conv(cin, 3))

    def decode(self, latents: Tensor, state: DecoderState | None = None) -> tuple[Tensor, DecoderState]:
        """latents [B, C, L, h, w] -> frames [B, 3, T, 8h, 8w] in [0, 1] (T = 1 + 4(L-1) from the start)."""
        state = state or DecoderState()
        B, _, L, h, w = latents.shape
        if L == 0:
            return latents.new_zeros(B, 3, 0, 8 * h, 8 * w), state
        x, _ = _frames_to_batch(latents)
        feats = _batch_to_frames(self.inp(x), B)  # [B, C, L, h, w]
        past = _shift_past(feats, state.previous)
        state.previous = feats[:, :, -1]
        x, _ = _frames_to_batch(feats)
        p, _ = _frames_to_batch(past)
        mixed = _batch_to_frames(self.memory(x, p), B)
        outputs = []
        if not state.started:
            first, _ = _frames_to_batch(mixed[:, :, :1])
            outputs.append(_batch_to_frames(self.first(first), B))
            mixed = mixed[:, :, 1:]
            state.started = True
        n = mixed.shape[2]
        if n:
            y, _ = _frames_to_batch(mixed)
            y = self.unfold(y)  # [B*n, 4C, h, w]
            C = y.shape[1] // self.stride
            y = (
                y.view(B, n, self.stride, C, h, w)
                .permute(0, 3, 1, 2, 4, 5)
                .reshape(B, C, n * self.stride, h, w)
            )
            outputs.append(y)
        frames = torch.cat(outputs, dim=2)
        y, _ = _frames_to_batch(frames)
        return _batch_to_frames((self.spatial(y) + 1) / 2, B), state


class VideoAutoencoder(nn.Module):
    """Encoder + decoder; `encode_image` gives the reference prefix latent."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def _check(self, frames: Tensor) -> None:
        stride = self.config.time.vae_spatial_stride
        if frames.dim() != 5 or frames.shape[1] != 3 or frames.shape[3] % stride or frames.shape[4] % stride:
            raise InputShapeError(
                f"frames: expected [B, 3, T, H, W] with H, W multiples of {stride}, got {list(frames.shape)}"
            )

    def encode(self, frames: Tensor) -> Tensor:
        """A whole clip [B, 3, 1 + 4k, H, W] in [0, 1] -> latents [B, C, 1 + k, H/8, W/8]."""
        self._check(frames)
        self.config.time.latent_frames_for(frames.shape[2])  # raises unless 1 + 4k frames
        return self.encoder.encode(frames)[0]

    def encode_image(self, image: Tensor) -> Tensor:
        """[B, 3, H, W] -> the one-latent prefix [B, C, 1, h, w]."""
        return self.encode(image[:, :, None])

    def encode_still(self, image: Tensor, latents: int) -> Tensor:
        """[B, 3, H, W] -> the latents [B, C, 1 + latents, h, w] of a video holding it still: the
        prefix (as encode_image gives it), then `latents` latent frames of the same picture."""
        frames = 1 + latents * self.config.time.vae_temporal_stride
        return self.encode(image[:, :, None].expand(-1, -1, frames, -1, -1))

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder.decode(latents)[0]

    def forward(self, frames: Tensor) -> Tensor:
        return self.decode(self.encode(frames))


def decoder_flops_per_frame(config: Config, width: int, height: int) -> float:
    """FLOPs the decoder spends per output frame at width x height (counted on the meta device)."""
    stride = config.time.vae_spatial_stride
    with torch.device("meta"):
        decoder = Decoder(config)
        latents = torch.zeros(1, config.latent_channels, 2, height // stride, width // stride)
    with FlopCounterMode(display=False) as counter:
        frames, _ = decoder.decode(latents)
    return counter.get_total_flops() / frames.shape[2]
