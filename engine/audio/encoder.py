"""The audio encoder: log-mel frames -> one feature vector per video frame, causal.

Video frame n gets the mel frames 4n .. 4n + 3 (the 640 samples it shows)
folded by a stride-4 convolution, then causal convolutions mix in the past.
The encoder has no lookahead of its own; how much future audio a latent
frame sees is decided by `latent_audio_windows` (config: lookahead_frames).
Being causal with a finite receptive field, it streams exactly:
`StreamingAudioEncoder` re-runs it over the last receptive field of mel
frames and keeps only the new outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.audio.features import StreamingLogMel, log_mel
from engine.config import Config


class CausalConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(cin, cout, kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


class AudioEncoder(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        a = config.audio
        self.audio_config, self.time = a, config.time
        self.per_frame = config.mel_frames_per_video_frame
        self.inp = CausalConv(a.mel_bins, a.encoder_width, 3)
        self.fold = nn.Conv1d(a.encoder_width, a.encoder_width, self.per_frame, stride=self.per_frame)
        self.layers = nn.ModuleList(
            CausalConv(a.encoder_width, a.encoder_width, 3) for _ in range(a.encoder_layers)
        )
        self.out = nn.Linear(a.encoder_width, a.feature_dim)

    @property
    def receptive_frames(self) -> int:
        """Video frames of past input that one output depends on (including its own)."""
        return 2 + 2 * len(self.layers)

    def forward(self, mel: Tensor) -> Tensor:
        """mel [B, M, bins] (M a multiple of mel frames per video frame) -> features [B, M / 4, D]."""
        if mel.shape[1] < self.per_frame:
            return mel.new_zeros(mel.shape[0], 0, self.out.out_features)
        x = F.gelu(self.inp(mel.transpose(1, 2)))
        x = self.fold(x)  # [B, W, frames]
        for layer in self.layers:
            x = x + layer(F.gelu(x))
        return self.out(x.transpose(1, 2))

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Offline: audio [B, S] at 16 kHz -> [B, S // 640, D]."""
        frames = audio.shape[1] // self.time.samples_per_frame
        mel = torch.stack([log_mel(a, self.audio_config, self.time) for a in audio])
        return self(mel[:, : frames * self.per_frame])


class StreamingAudioEncoder:
    """Push audio in any pieces; get per-video-frame features equal to `encode_audio` on the whole."""

    def __init__(self, encoder: AudioEncoder) -> None:
        bins = encoder.audio_config.mel_bins
        self.encoder = encoder
        self.mel = StreamingLogMel(encoder.audio_config, encoder.time)
        self.per_frame = encoder.per_frame
        self._pending = torch.zeros(0, bins)  # mel frames of an unfinished video frame
        # Mel frames of the last receptive field; while the stream is younger than that, it starts
        # at the stream's first frame, where the zero padding is the same as offline.
        self._history = torch.zeros(0, bins)

    @torch.no_grad()
    def push(self, samples: Tensor) -> Tensor:
        """samples [k] -> features [n, D] of the video frames completed by them (n may be 0)."""
        mel = torch.cat([self._pending, self.mel.push(samples)])
        complete = mel.shape[0] // self.per_frame * self.per_frame
        self._pending = mel[complete:]
        if complete == 0:
            return torch.zeros(
                0, self.encoder.out.out_features, device=next(self.encoder.parameters()).device
            )
        window = torch.cat([self._history, mel[:complete]])
        device = next(self.encoder.parameters()).device  # mel stays on the CPU; the encoder may not
        out = self.encoder(window[None].to(device))[0, -(complete // self.per_frame) :]
        keep = (self.encoder.receptive_frames - 1) * self.per_frame
        self._history = window[-keep:] if keep else window[:0]
        return out
