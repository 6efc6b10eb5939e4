"""The causal video autoencoder: spatial /8, temporal /4 with the first frame alone.

In the spirit of tiny autoencoders for video diffusion (TAEHV): per-frame 2D
conv stacks do the spatial work; time is handled at the latent rate only,
by folding 4 frames into channels (encoder) or unfolding channels into 4
frames (decoder), plus a "memory" block that sees the previous latent
frame's features. That is the only state crossing latent frames, so
streaming (chunk by chunk, with `EncoderState` / `DecoderState`) computes
exactly what a whole-clip pass computes. A clip of 1 + 4k frames gives
1 + k latents; a single image gives one latent (the reference prefix).

Every resampling step has a parameter-free residual shortcut, as in Deep Compression
Autoencoders (DC-AE, Chen et al. 2024): space-to-channel then channel-group averaging when the
grid shrinks (pixels -> features, features -> latent, 4 frames -> 1), channel duplication then
channel-to-space when it grows. A plain conv stack of this size starts as a blur and learns
detail slowly (the tiny autoencoder gave 24.5 dB at the LR size after 4000 steps and lost the
faces); the shortcuts give the convs a residual to learn on top of a lossless rearrangement.

Latents leave `encode` normalised per channel (zero mean, unit variance, from running statistics
of the training batches) and `decode` undoes it, as latent diffusion does. The raw latents of a
trained tiny autoencoder have std 0.13-0.36: against the unit-variance noise of flow matching
the mouth's share of the target was a fraction of a percent of the loss (LR-A2V's loss on the
mouth did not change with another clip's audio). Normalising alone has not yet made it listen.

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


def _match_channels(x: Tensor, channels: int) -> Tensor:
    """[N, C, h, w] -> [N, channels, h, w]: the mean of equal channel groups, or each channel
    repeated (DC-AE's shortcut; the channel counts must divide one another)."""
    C = x.shape[1]
    if C % channels == 0:
        return x.view(x.shape[0], channels, C // channels, *x.shape[2:]).mean(2)
    if channels % C == 0:
        return x.repeat_interleave(channels // C, dim=1)
    raise ValueError(f"channel shortcut from {C} to {channels}: one must divide the other")


class Down(nn.Module):
    """Halve the grid: a stride-2 conv plus space-to-channel averaging."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.cout = cout

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + _match_channels(F.pixel_unshuffle(x, 2), self.cout)


class Up(nn.Module):
    """Double the grid: nearest upsampling and a conv, plus channel duplication to space."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout)
        self.cout = cout

    def forward(self, x: Tensor) -> Tensor:
        up = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return up + F.pixel_shuffle(_match_channels(x, 4 * self.cout), 2)


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
        self.spatial_stride = config.time.vae_spatial_stride
        self.stem = _conv(3, chans[0] // 2)
        stages, cin = [], chans[0] // 2
        for c in chans:
            stages += [Down(cin, c), ResBlock(c)]
            cin = c
        self.spatial = nn.Sequential(*stages)
        c = chans[-1]
        self.first = nn.Conv2d(c, c, 1)
        self.fold = nn.Conv2d(self.stride * c, c, 1)  # 4 frames folded into channels
        self.memory = MemBlock(c)
        self.out = _conv(c, config.latent_channels)

    def frame_features(self, frames: Tensor) -> Tensor:
        """[B, 3, T, H, W] in [0, 1] -> [B, C, T, H/s, W/s] (s: the spatial stride)."""
        x, B = _frames_to_batch(frames * 2 - 1)
        return _batch_to_frames(self.spatial(self.stem(x)), B)

    def _latents(self, groups: Tensor, state: EncoderState) -> Tensor:
        past = _shift_past(groups, state.previous)
        state.previous = groups[:, :, -1]
        x, B = _frames_to_batch(groups)
        p, _ = _frames_to_batch(past)
        mixed = self.memory(x, p)
        return _batch_to_frames(self.out(mixed) + _match_channels(mixed, self.out.out_channels), B)

    def encode(self, frames: Tensor, state: EncoderState | None = None) -> tuple[Tensor, EncoderState]:
        """Encode frames [B, 3, T, H, W] (any T when streaming) -> latents [B, C, L, h, w] and state."""
        return self.encode_features(self.frame_features(frames), state)

    def encode_features(
        self, feats: Tensor, state: EncoderState | None = None
    ) -> tuple[Tensor, EncoderState]:
        """`encode` from the frames' features [B, C, T, h, w] (frame_features): the per-frame
        spatial stack is most of the encoder's cost, and a still video needs it once."""
        state = state or EncoderState()
        groups = []
        if not state.started and feats.shape[2] > 0:
            first, _ = _frames_to_batch(feats[:, :, :1])
            groups.append(_batch_to_frames(self.first(first) + first, feats.shape[0]))
            feats = feats[:, :, 1:]
            state.started = True
        if state.pending is not None:
            feats = torch.cat([state.pending, feats], dim=2)
        full = feats.shape[2] // self.stride
        if full:
            B, C, _, h, w = feats.shape
            block = feats[:, :, : full * self.stride].reshape(B, C, full, self.stride, h, w)
            block = block.permute(0, 2, 3, 1, 4, 5).reshape(B * full, self.stride * C, h, w)
            mean = block.view(B * full, self.stride, C, h, w).mean(1)
            groups.append(_batch_to_frames(self.fold(block) + mean, B))
        rest = feats[:, :, full * self.stride :]
        state.pending = rest if rest.shape[2] else None
        if not groups:
            B, _, _, h, w = feats.shape
            return feats.new_zeros(B, self.out.out_channels, 0, h, w), state
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
        self.spatial_stride = config.time.vae_spatial_stride
        c = chans[0]
        self.inp = _conv(config.latent_channels, c)
        self.memory = MemBlock(c)
        self.first = nn.Conv2d(c, c, 1)
        self.unfold = nn.Conv2d(c, self.stride * c, 1)  # channels unfolded into 4 frames
        stages, cin = [], c
        for cout in chans:
            stages += [ResBlock(cin), Up(cin, cout)]
            cin = cout
        self.spatial = nn.Sequential(*stages, nn.SiLU(), _conv(cin, 3))

    def decode(self, latents: Tensor, state: DecoderState | None = None) -> tuple[Tensor, DecoderState]:
        """latents [B, C, L, h, w] -> frames [B, 3, T, s*h, s*w] in [0, 1] (T = 1 + 4(L-1) from the start)."""
        state = state or DecoderState()
        B, _, L, h, w = latents.shape
        if L == 0:
            s = self.spatial_stride
            return latents.new_zeros(B, 3, 0, s * h, s * w), state
        x, _ = _frames_to_batch(latents)
        feats = self.inp(x) + _match_channels(x, self.inp.out_channels)
        feats = _batch_to_frames(feats, B)  # [B, C, L, h, w]
        past = _shift_past(feats, state.previous)
        state.previous = feats[:, :, -1]
        x, _ = _frames_to_batch(feats)
        p, _ = _frames_to_batch(past)
        mixed = _batch_to_frames(self.memory(x, p), B)
        outputs = []
        if not state.started:
            first, _ = _frames_to_batch(mixed[:, :, :1])
            outputs.append(_batch_to_frames(self.first(first) + first, B))
            mixed = mixed[:, :, 1:]
            state.started = True
        n = mixed.shape[2]
        if n:
            y, _ = _frames_to_batch(mixed)
            y = self.unfold(y) + y.repeat(1, self.stride, 1, 1)  # [B*n, 4C, h, w]: 4 frames' features
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


LATENT_STATS_MOMENTUM = 0.01  # weight of each training batch in the running latent statistics


class VideoAutoencoder(nn.Module):
    """Encoder + decoder with normalised latents; `encode_image` gives the reference prefix latent."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        C = config.latent_channels
        self.register_buffer("latent_mean", torch.zeros(C))
        self.register_buffer("latent_std", torch.ones(C))
        self.register_buffer("latent_batches", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def track_latent_stats(self, raw: Tensor) -> None:
        """Fold one batch of raw latents [B, C, L, h, w] into the running per-channel statistics."""
        raw = raw.float()  # bf16 under autocast; the statistics stay float32
        mean, std = raw.mean((0, 2, 3, 4)), raw.std((0, 2, 3, 4)).clamp_min(1e-4)
        if int(self.latent_batches) == 0:
            self.latent_mean.copy_(mean)
            self.latent_std.copy_(std)
        else:
            self.latent_mean.lerp_(mean, LATENT_STATS_MOMENTUM)
            self.latent_std.lerp_(std, LATENT_STATS_MOMENTUM)
        self.latent_batches += 1

    def _scale(self) -> tuple[Tensor, Tensor]:
        return self.latent_mean[None, :, None, None, None], self.latent_std[None, :, None, None, None]

    def normalize(self, raw: Tensor) -> Tensor:
        """Raw encoder latents -> the normalised latents the generators see (tracked in training)."""
        if self.training:
            self.track_latent_stats(raw.detach())
        mean, std = self._scale()
        return (raw - mean) / std

    def decode_stream(
        self, latents: Tensor, state: DecoderState | None = None
    ) -> tuple[Tensor, DecoderState]:
        """Streaming decode of normalised latents (chunk by chunk, as `Decoder.decode`)."""
        mean, std = self._scale()
        return self.decoder.decode(latents * std + mean, state)

    def _check(self, frames: Tensor) -> None:
        stride = self.config.time.vae_spatial_stride
        if frames.dim() != 5 or frames.shape[1] != 3 or frames.shape[3] % stride or frames.shape[4] % stride:
            raise InputShapeError(
                f"frames: expected [B, 3, T, H, W] with H, W multiples of {stride}, got {list(frames.shape)}"
            )

    def encode(self, frames: Tensor) -> Tensor:
        """A whole clip [B, 3, 1 + 4k, H, W] in [0, 1] -> latents [B, C, 1 + k, H/s, W/s]."""
        self._check(frames)
        self.config.time.latent_frames_for(frames.shape[2])  # raises unless 1 + 4k frames
        return self.normalize(self.encoder.encode(frames)[0])

    def encode_image(self, image: Tensor) -> Tensor:
        """[B, 3, H, W] -> the one-latent prefix [B, C, 1, h, w]."""
        return self.encode(image[:, :, None])

    def encode_still(self, image: Tensor, latents: int) -> Tensor:
        """[B, 3, H, W] -> the latents [B, C, 1 + latents, h, w] of a video holding it still: the
        prefix (as encode_image gives it), then `latents` latent frames of the same picture.
        The picture's features are computed once and repeated (every frame is the same)."""
        self._check(image[:, :, None])
        frames = 1 + latents * self.config.time.vae_temporal_stride
        feats = self.encoder.frame_features(image[:, :, None])
        return self.normalize(self.encoder.encode_features(feats.expand(-1, -1, frames, -1, -1))[0])

    def still_latent(self, image: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, C, 1, h, w]: the latent every frame of a video holding the picture still
        settles to. The first latent after the prefix still remembers the prefix's own encoding
        (the memory block sees the previous latent); from the second on each one sees a copy of
        itself, so they are all equal: this is the picture as a moving video's latent frame, the
        generators' starting point (models/lr_a2v.py)."""
        return self.encode_still(image, 2)[:, :, -1:]

    def decode(self, latents: Tensor) -> Tensor:
        return self.decode_stream(latents)[0]

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
