"""Media tracks between aiortc and an engine session.

Outbound: the session's paced frames as a video track (scaled to the output
size by libswscale, which also does the RGB -> YUV the encoder needs) and its
delayed audio as an audio track; the bounded relay (relay.py) shares both with every peer of
the session without running the engine twice. Inbound: the talker's
microphone, resampled to the engine's 16 kHz mono.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from engine.frames import VideoFrame
from engine.streaming.session import Session
from transport.outputs.sink import pcm16, planes_from_rgb
from transport.stamps import FrameStamp, MarkListener, stamp_yuv420p

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000  # RTP video clock rate
T = TypeVar("T")


async def delayed(source: AsyncIterator[T], seconds: float, after_s: float = 0.0) -> AsyncIterator[T]:
    """`source`'s items, each `seconds` after it came, from `after_s` on (before: at once): a delay
    line, the rate is unchanged."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, T] | None] = asyncio.Queue()
    start = loop.time() + after_s

    async def pump() -> None:
        async for item in source:
            now = loop.time()
            queue.put_nowait((now + seconds if now >= start else now, item))
        queue.put_nowait(None)

    task = loop.create_task(pump())
    try:
        while (entry := await queue.get()) is not None:
            when, item = entry
            await asyncio.sleep(max(0.0, when - loop.time()))
            yield item
    finally:
        task.cancel()


class SessionVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        session: Session,
        width: int,
        height: int,
        *,
        marks: MarkListener | None = None,
        delay: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """marks: bench mode; every frame then carries a FrameStamp relative to the marks heard.
        delay: bench mode; (seconds, after_s): frames leave that much later from after_s on."""
        super().__init__()
        self._frames = delayed(session.frames(), *delay) if delay[0] > 0 else session.frames()
        self.width, self.height = width, height
        self._ticks = VIDEO_CLOCK // session.timeline.fps
        self._samples_per_frame = session.timeline.rate // session.timeline.fps
        self._marks = marks
        self.last_pts: int | None = None

    async def recv(self) -> av.VideoFrame:
        try:
            frame = await anext(self._frames)
        except StopAsyncIteration:
            self.stop()
            raise MediaStreamError from None
        # Scaling to 720p (with the RGB -> YUV the encoder needs) takes milliseconds: a thread,
        # not the event loop that carries every peer's packets.
        stamp = self._stamp(frame, self._marks) if self._marks is not None else None
        out = await asyncio.to_thread(self._scale, frame.image, stamp)
        out.pts = frame.pts * self._ticks
        out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.last_pts = frame.pts
        return out

    def _scale(self, image: np.ndarray, stamp: FrameStamp | None) -> av.VideoFrame:
        planes = planes_from_rgb(image, self.width, self.height)
        if stamp is not None:
            stamp_yuv420p(planes, stamp)
        return av.VideoFrame.from_ndarray(planes, format="yuv420p")

    def _stamp(self, frame: VideoFrame, marks: MarkListener) -> FrameStamp:
        """Where the audio the picture was made from ends, and where the frame sits, after the last
        mark in that audio."""
        latest = marks.latest(frame.audio_heard)
        if latest is None:
            return FrameStamp(frame.pts)
        mark_id, onset = latest
        ms = 1000 / marks.rate
        centre = frame.pts * self._samples_per_frame
        return FrameStamp(
            frame.pts, mark_id, round((frame.audio_heard - onset) * ms), round((centre - onset) * ms)
        )


class SessionAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, session: Session, *, delay: tuple[float, float] = (0.0, 0.0)) -> None:
        super().__init__()
        self._chunks = delayed(session.audio_out(), *delay) if delay[0] > 0 else session.audio_out()
        self.rate = session.timeline.rate

    async def recv(self) -> av.AudioFrame:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self.stop()
            raise MediaStreamError from None
        pcm = pcm16(chunk.samples)
        # Stereo with the same samples in both channels: the Opus encoder's own mono -> stereo
        # upmix would lower the level by 3 dB.
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm, 2)[None], format="s16", layout="stereo")
        frame.sample_rate = self.rate
        frame.pts = chunk.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame's Y plane [H, W], a view of the decoder's buffer: a client that only reads
    the picture (a code, a likeness) skips the RGB conversion, 5 ms a 720p frame on the loop."""
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]


def mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """A decoded packed s16 audio frame (what aiortc's Opus decoder gives) as float mono."""
    samples = frame.to_ndarray().astype(np.float32) / 32768
    return samples.reshape(-1, frame.layout.nb_channels).mean(axis=1)


class MicrophoneIngest:
    """Incoming audio frames (any rate and layout) -> 16 kHz mono float32, channels averaged.

    FFmpeg's own downmix to mono adds +3 dB:
    resample with the channels kept, then average them here.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._layout: str | None = None

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        if self._resampler is None or frame.layout.name != self._layout:
            self._layout = frame.layout.name
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=self.rate)
        pieces = [f.to_ndarray().mean(axis=0, dtype=np.float32) for f in self._resampler.resample(frame)]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
