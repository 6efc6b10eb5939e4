"""Audio files (any format FFmpeg reads: WAV, FLAC, MP3, Ogg, M4A, the audio of a video file),
decoded piece by piece, so minutes of audio never sit in memory at once.

Each decoded piece comes out twice: the original frame (for an output file that
keeps the original audio) and the engine's 16 kHz mono float32. Channels are
averaged in numpy after resampling: FFmpeg's own stereo-to-mono downmix adds
+3 dB.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from engine.config import TimeBase
from engine.media.errors import MediaError

log = logging.getLogger(__name__)


class AudioFile:
    """The first audio stream of a media file."""

    def __init__(self, path: Path | str, time: TimeBase | None = None) -> None:
        self.path = Path(path)
        self.time = time or TimeBase()
        if not self.path.is_file():
            raise MediaError(f"{self.path}: no such file")
        try:
            self._container = av.open(str(self.path))
        except av.error.FFmpegError as err:
            raise MediaError(f"{self.path}: not an audio format we read ({err})") from None
        audio = [s for s in self._container.streams if s.type == "audio"]
        if not audio:
            self._container.close()
            raise MediaError(f"{self.path}: has no audio stream")
        self._stream = audio[0]
        ctx = self._stream.codec_context
        self.sample_rate: int = ctx.sample_rate
        self.layout: str = ctx.layout.name
        self.channels: int = ctx.layout.nb_channels
        if not self.sample_rate:
            self._container.close()
            raise MediaError(f"{self.path}: the audio stream has no sample rate")

    @property
    def duration(self) -> float | None:
        """Seconds, as the container states it (an estimate; None when unknown)."""
        s = self._stream
        if s.duration is not None and s.time_base is not None:
            return float(s.duration * s.time_base)
        if self._container.duration is not None:
            return self._container.duration / av.time_base
        return None

    def pieces(self) -> Iterator[tuple[av.AudioFrame | None, np.ndarray]]:
        """(original frame, its 16 kHz mono float32 samples) in order; the flushed resampler tail
        comes last with no original frame."""
        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.time.sample_rate)
        try:
            for frame in self._container.decode(self._stream):
                yield frame, _mono(resampler.resample(frame))
        except av.error.FFmpegError as err:
            raise MediaError(f"{self.path}: the audio is corrupted ({err})") from None
        tail = _mono(resampler.resample(None))
        if tail.size:
            yield None, tail

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mono(frames: list[av.AudioFrame]) -> np.ndarray:
    """Planar float frames -> one mono float32 array (channels averaged)."""
    if not frames:
        return np.zeros(0, np.float32)
    return np.concatenate([f.to_ndarray().mean(axis=0, dtype=np.float32) for f in frames])
