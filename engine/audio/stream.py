"""Audio features of a stream (live or read from a file) and the windows each segment attends to.

Audio pushed in pieces of any size goes through the streaming encoder, which
gives exactly the offline features. Features are kept only as long as a later
segment can still need them: segments ask for their windows in order, and
each request releases what lies before its own window.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engine.audio.encoder import AudioEncoder, StreamingAudioEncoder
from engine.audio.windows import latent_audio_windows
from engine.config import Config
from engine.generation.segments import Segment


class AudioFeatureStream:
    def __init__(self, encoder: AudioEncoder, config: Config, start_frame: int = 0) -> None:
        """start_frame: the video frame the first pushed sample belongs to (what came before is
        silence to the encoder); a live session restarts its stream there after an interrupt."""
        self.config = config
        self.encoder = StreamingAudioEncoder(encoder)
        device = next(encoder.parameters()).device
        self.features = torch.zeros(0, config.audio.feature_dim, device=device)  # frames base, base+1, ...
        self.origin = start_frame  # frames before it are silence to the encoder
        self.base = start_frame  # video frame of features[0]
        self.samples = start_frame * config.time.samples_per_frame  # pts of the next sample
        self.finished = False

    @property
    def frames(self) -> int:
        """Video frames whose features are known (0 .. frames - 1)."""
        return self.base + self.features.shape[0]

    def push(self, samples: np.ndarray | Tensor) -> None:
        """Append 16 kHz mono float samples."""
        if self.finished:
            raise RuntimeError("audio pushed after finish()")
        samples = torch.as_tensor(samples, dtype=torch.float32)
        self.samples += samples.shape[0]
        new = self.encoder.push(samples)
        if new.shape[0]:
            self.features = torch.cat([self.features, new])

    def finish(self) -> None:
        """The audio has ended: pad the last partial video frame with silence so it gets features."""
        spf = self.config.time.samples_per_frame
        partial = self.samples % spf
        if partial:
            self.push(np.zeros(spf - partial, np.float32))
            self.samples -= spf - partial  # padding is not audio
        self.finished = True

    def windows(self, seg: Segment) -> Tensor:
        """Audio windows [1, M + N, A, D] of the segment's motion and new latent frames.

        Frames not heard yet (or after the end) are zeros, like frames before the
        stream. Segments must be asked for in order: what lies before this
        segment's window is released.
        """
        left = self.config.audio.left_context_frames
        start = seg.audio_first_frame - left
        if start < self.base and self.base > self.origin:
            raise ValueError(f"segment {seg.index} needs audio frame {start}, already released")
        # Frames before `base` are zeros here: silence before the origin (or the stream's start).
        windows = latent_audio_windows(
            self.features[None], seg.audio_first_frame - self.base, seg.latent_frames, self.config
        )
        drop = min(max(0, start - self.base), self.features.shape[0])
        self.features, self.base = self.features[drop:], self.base + drop
        return windows
