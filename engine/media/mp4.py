"""MP4 output: H.264 video at 25 fps and the original audio (AAC, or lossless ALAC / FLAC).

The file is written as `NAME.partial` and renamed when complete, so an
interrupted render never leaves a truncated MP4 under the requested name.
AAC's encoder delay (priming) is recorded in the MP4 edit list, so players
start the audio at the first input sample, aligned with the first frame.
"""

from __future__ import annotations

import contextlib
import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.media.errors import MediaError

log = logging.getLogger(__name__)

AUDIO_CODECS = ("aac", "alac", "flac")
MP4_SUFFIXES = (".mp4", ".m4v")  # what an MP4 file is named (players go by the name)
VIDEO_OPTIONS = {"crf": "18", "preset": "veryfast"}
AAC_BITRATE = 192_000
FALLBACK_RATE = 48_000  # when the encoder does not take the input's sample rate


class Mp4Writer:
    def __init__(
        self,
        path: Path | str,
        width: int,
        height: int,
        fps: int,
        audio_rate: int | None,
        audio_channels: int = 1,
        audio_codec: str = "aac",
    ) -> None:
        if width % 2 or height % 2:
            raise MediaError(f"H.264 needs an even frame size, got {width}x{height}")
        if audio_codec not in AUDIO_CODECS:
            raise MediaError(f"audio codec {audio_codec!r}; choose one of {', '.join(AUDIO_CODECS)}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.frames_written = 0
        self._container = av.open(str(self.partial), "w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._container.add_stream("libx264", rate=fps, options=VIDEO_OPTIONS)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._video.codec_context.time_base = Fraction(1, fps)
        self._audio = None
        self._audio_samples = 0
        if audio_rate:
            supported = av.codec.Codec(audio_codec, "w").audio_rates
            rate = audio_rate if not supported or audio_rate in supported else FALLBACK_RATE
            # Speech video: mono stays mono, anything else becomes stereo (a WAV may name its
            # layout only "2 channels", which encoders refuse).
            layout = "mono" if audio_channels == 1 else "stereo"
            self._audio = self._container.add_stream(audio_codec, rate=rate, layout=layout)
            if audio_codec == "aac":
                self._audio.bit_rate = AAC_BITRATE

    def write_video(self, frames: np.ndarray) -> None:
        """frames uint8 [T, H, W, 3] RGB, the next T frames (pts counts frames from 0)."""
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1

    def write_audio(self, frame: av.AudioFrame) -> None:
        """The next decoded frame of the original audio (converted to the encoder's format here)."""
        if self._audio is None:
            raise MediaError("this MP4 was opened without an audio track")
        frame.pts = self._audio_samples
        frame.time_base = Fraction(1, frame.sample_rate)
        self._audio_samples += frame.samples
        self._container.mux(self._audio.encode(frame))

    def close(self) -> Path:
        """Flush the encoders, finish the file and give it its name."""
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._container.mux(self._audio.encode(None))
        self._container.close()
        os.replace(self.partial, self.path)
        log.info("wrote %s (%d frames)", self.path, self.frames_written)
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        with contextlib.suppress(av.error.FFmpegError):  # already broken: nothing left to save
            self._container.close()
        self.partial.unlink(missing_ok=True)
