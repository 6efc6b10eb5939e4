"""Sinks that encode: H.264 (low latency) and AAC, muxed by PyAV into a stream or a file.

- MPEG-TS over `udp://` and `tcp://` (what OBS's Media Source, VLC and ffplay open),
- FLV to `rtmp://` / `rtmps://` (a local nginx-rtmp, or a streaming service's ingest),
- `rtsp://` (to an RTSP server such as MediaMTX, which publishes it),
- `srt://`: PyAV's FFmpeg has no SRT, so the MPEG-TS goes through a pipe to the system's `ffmpeg`
  program, which copies it to the SRT peer,
- `.mp4` / `.mkv` files, written as NAME.partial and renamed when complete (like `ihuman render`).

Video: x264 with `tune=zerolatency` (no B-frames, no look-ahead: a frame leaves the encoder when it
enters) and a key frame every 2 s, so a receiver that joins late, or one reconnected, shows a
picture within 2 s; `preset=ultrafast` so that 1280x720 at 25 fps keeps up beside the engine on a
2-core CPU. Audio: AAC at 48 kHz stereo, what every player and OBS takes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import numpy as np

from transport.outputs.sink import OutputError, Sink, StreamFormat

VIDEO_BITRATE = 4_000_000
AUDIO_RATE = 48_000
AUDIO_BITRATE = 128_000
X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "g": "50", "bf": "0"}
FILE_FORMATS = {".mp4": "mp4", ".mkv": "matroska"}


class EncodedSink(Sink):
    """H.264 + AAC muxed by PyAV into `target` (a URL, a path or a binary pipe)."""

    def __init__(
        self, url: str, fmt: StreamFormat, container_format: str, options: dict[str, str] | None = None
    ) -> None:
        super().__init__(url, fmt)
        self.container_format = container_format
        self.options = options or {}
        self._container: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio: av.AudioStream | None = None
        self._resampler: av.AudioResampler | None = None
        self._last_video = -1

    def target(self) -> str | IO[bytes]:
        """Where the container writes (the URL by default)."""
        return self.url

    def open(self) -> None:
        container = av.open(self.target(), "w", format=self.container_format, options=self.options)
        try:
            video = container.add_stream("libx264", rate=self.fmt.fps, options=X264_OPTIONS)
            video.width, video.height, video.pix_fmt = self.fmt.width, self.fmt.height, "yuv420p"
            video.bit_rate = VIDEO_BITRATE
            video.codec_context.time_base = Fraction(1, self.fmt.fps)
            audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            audio.bit_rate = AUDIO_BITRATE
        except Exception:
            container.close()
            raise
        self._container, self._video, self._audio = container, video, audio
        self._last_video = -1
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)

    def write_video(self, planes: np.ndarray, index: int) -> None:
        assert self._container is not None and self._video is not None, "open() first"
        if index <= self._last_video:  # muxers refuse times that do not increase (EINVAL)
            return
        self._last_video = index
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = index, Fraction(1, self.fmt.fps)
        self._container.mux(self._video.encode(frame))

    def write_audio(self, pcm: np.ndarray, index: int) -> None:
        assert self._container is not None and self._audio is not None and self._resampler is not None
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.fmt.sample_rate
        frame.pts, frame.time_base = index, Fraction(1, self.fmt.sample_rate)
        for resampled in self._resampler.resample(frame):
            self._container.mux(self._audio.encode(resampled))

    def close(self, complete: bool = True) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if complete and self._video is not None and self._audio is not None:
                container.mux(self._video.encode(None))
                container.mux(self._audio.encode(None))
        finally:
            container.close()


class StreamSink(EncodedSink):
    """A network stream: MPEG-TS (udp, tcp), FLV (rtmp) or RTSP."""

    def __init__(self, url: str, fmt: StreamFormat) -> None:
        scheme = url.split("://", 1)[0].lower()
        if scheme == "udp" and "pkt_size=" not in url:
            # 7 TS packets per datagram: under the 1500-byte MTU, so no IP fragments on a LAN.
            url += ("&" if "?" in url else "?") + "pkt_size=1316"
        if scheme in ("udp", "tcp"):
            super().__init__(url, fmt, "mpegts")
        elif scheme in ("rtmp", "rtmps"):
            super().__init__(url, fmt, "flv", {"flvflags": "no_duration_filesize"})
        elif scheme == "rtsp":
            super().__init__(url, fmt, "rtsp", {"rtsp_transport": "tcp"})
        else:
            raise OutputError(f"{url}: not a stream this sink sends (udp, tcp, rtmp, rtmps, rtsp)")


class FileSink(EncodedSink):
    """A recording: NAME.partial while it is written, renamed to NAME when closed complete."""

    def __init__(self, url: str, fmt: StreamFormat) -> None:
        self.path = Path(url.removeprefix("file://"))
        container = FILE_FORMATS.get(self.path.suffix.lower())
        if container is None:
            raise OutputError(f"{url}: a recording is written as {' or '.join(FILE_FORMATS)}")
        super().__init__(url, fmt, container)
        self.partial = self.path.with_name(self.path.name + ".partial")

    def target(self) -> str:
        return str(self.partial)

    def close(self, complete: bool = True) -> None:
        try:
            super().close(complete)
        finally:
            if complete and self.partial.exists():
                self.partial.replace(self.path)
            else:
                self.partial.unlink(missing_ok=True)


class SrtSink(EncodedSink):
    """MPEG-TS piped to the system's ffmpeg, which sends it to an SRT peer (`-c copy`)."""

    def __init__(self, url: str, fmt: StreamFormat) -> None:
        super().__init__(url, fmt, "mpegts")
        self._ffmpeg: subprocess.Popen[bytes] | None = None

    def target(self) -> IO[bytes]:
        program = shutil.which("ffmpeg")
        if program is None:
            raise OutputError(
                "srt:// outputs need the ffmpeg program (PyAV's FFmpeg has no SRT): "
                "install it (Debian/Ubuntu: apt-get install ffmpeg)"
            )
        # Probe the pipe briefly: its streams are ours and known, and a long probe is latency.
        probe = ["-probesize", "500000", "-analyzeduration", "500000"]
        command = [program, "-hide_banner", "-loglevel", "error", *probe, "-f", "mpegts", "-i", "pipe:0"]
        url = self.url
        if "pkt_size=" not in url:  # SRT's live mode carries at most 1316 bytes (7 TS packets) a packet
            url += ("&" if "?" in url else "?") + "pkt_size=1316"
        command += ["-c", "copy", "-f", "mpegts", url]
        self._ffmpeg = subprocess.Popen(command, stdin=subprocess.PIPE)
        assert self._ffmpeg.stdin is not None
        return self._ffmpeg.stdin

    def close(self, complete: bool = True) -> None:
        try:
            super().close(complete)
        finally:
            process, self._ffmpeg = self._ffmpeg, None
            if process is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # type: ignore[union-attr]
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
