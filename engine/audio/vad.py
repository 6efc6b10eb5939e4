"""A voice-activity gate: WebRTC's VAD on 20 ms frames, with a hangover.

The gate passes speech and replaces everything else by exact silence, so
background noise never moves the avatar's mouth; the hangover keeps word
endings and short pauses inside a phrase. It sees audio in order, once.
"""

from __future__ import annotations

import numpy as np
import webrtcvad

FRAME_MS = 20
WARMUP_FRAMES = 5  # WebRTC's VAD calls its first ~100 ms speech while its noise model settles


class VadGate:
    def __init__(self, sample_rate: int = 16_000, mode: int = 2, hangover_ms: int = 300) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"WebRTC VAD takes 8, 16, 32 or 48 kHz, not {sample_rate}")
        self._vad = webrtcvad.Vad(mode)
        self.sample_rate = sample_rate
        self.frame = sample_rate * FRAME_MS // 1000
        self.hangover_frames = hangover_ms // FRAME_MS
        self._pending = np.zeros(0, np.float32)  # samples of an unfinished 20 ms frame
        self._since_speech = self.hangover_frames + 1  # frames since the last voiced one
        self.speech = False  # the decision for the latest complete frame
        self._frames_seen = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Gated samples for the complete 20 ms frames among pending + samples (the rest waits)."""
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        complete = len(data) // self.frame * self.frame
        self._pending = data[complete:]
        out = data[:complete].copy()
        pcm = (np.clip(out, -1, 1) * 32767).astype("<i2")
        for start in range(0, complete, self.frame):
            voiced = self._vad.is_speech(pcm[start : start + self.frame].tobytes(), self.sample_rate)
            voiced = voiced and self._frames_seen >= WARMUP_FRAMES
            self._frames_seen += 1
            self._since_speech = 0 if voiced else self._since_speech + 1
            self.speech = self._since_speech <= self.hangover_frames
            if not self.speech:
                out[start : start + self.frame] = 0.0
        return out

    def flush(self) -> np.ndarray:
        """The unfinished frame's samples, gated by the current decision (end of a stream)."""
        rest, self._pending = self._pending, np.zeros(0, np.float32)
        return rest if self.speech else np.zeros_like(rest)
