"""Log-mel features in torch (torchaudio does not load with our torch), offline and streaming.

Frames are causal: frame i ends at sample (i + 1) * hop and spans the
`window` samples before it (zeros before the stream starts). So a stream
fed in pieces of any size produces exactly the offline frames, with no
lookahead of its own; the model's lookahead is a separate, explicit choice.
Each video frame (640 samples) gets `640 / hop` mel frames.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from engine.config import AudioConfig, TimeBase

LOG_FLOOR = 1e-6


def _hz_to_mel(hz: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(bins: int, n_fft: int, sample_rate: int) -> Tensor:
    """Triangular HTK-mel filters [bins, n_fft // 2 + 1] from 0 Hz to Nyquist."""
    mels = torch.linspace(0.0, float(_hz_to_mel(sample_rate / 2)), bins + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def _frames_to_log_mel(frames: Tensor, cfg: AudioConfig, sample_rate: int) -> Tensor:
    """Windowed frames [N, window] -> log-mel [N, bins]."""
    n_fft = 2 ** math.ceil(math.log2(cfg.mel_window))
    window = torch.hann_window(cfg.mel_window, periodic=True, dtype=frames.dtype, device=frames.device)
    spectrum = torch.fft.rfft(frames * window, n=n_fft).abs().pow(2)  # [N, n_fft/2 + 1]
    mel = spectrum @ mel_filterbank(cfg.mel_bins, n_fft, sample_rate).to(frames.device).T
    return torch.log(mel + LOG_FLOOR)


def log_mel(audio: Tensor, cfg: AudioConfig, time: TimeBase) -> Tensor:
    """Offline features: audio [S] float -> [S // hop, bins]."""
    history = cfg.mel_window - cfg.mel_hop
    padded = torch.cat([audio.new_zeros(history), audio.float()])
    count = audio.shape[0] // cfg.mel_hop
    if count == 0:
        return audio.new_zeros(0, cfg.mel_bins)
    frames = padded[: history + count * cfg.mel_hop].unfold(0, cfg.mel_window, cfg.mel_hop)
    return _frames_to_log_mel(frames, cfg, time.sample_rate)


class StreamingLogMel:
    """Feed audio in pieces of any size; get the same frames `log_mel` gives for the whole signal."""

    def __init__(self, cfg: AudioConfig, time: TimeBase) -> None:
        self.cfg, self.time = cfg, time
        self._buffer = torch.zeros(cfg.mel_window - cfg.mel_hop)  # the window's history
        self.frames_out = 0

    def push(self, samples: Tensor) -> Tensor:
        """New complete frames [n, bins] (n may be 0) after appending samples [k]."""
        self._buffer = torch.cat([self._buffer, samples.float()])
        hop, window = self.cfg.mel_hop, self.cfg.mel_window
        count = (self._buffer.shape[0] - (window - hop)) // hop
        if count <= 0:
            return torch.zeros(0, self.cfg.mel_bins)
        frames = self._buffer[: window - hop + count * hop].unfold(0, window, hop)
        self._buffer = self._buffer[count * hop :]
        self.frames_out += count
        return _frames_to_log_mel(frames, self.cfg, self.time.sample_rate)
