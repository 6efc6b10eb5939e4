"""A session's picture and voice, taken once and handed to every output runner."""

from __future__ import annotations

import asyncio

import numpy as np

from engine.frames import VideoFrame
from engine.streaming.session import Session
from transport.outputs.runner import OutputRunner
from transport.outputs.sink import StreamFormat, pcm16, planes_from_rgb
from transport.stamps import FrameStamp, stamp_yuv420p


class SessionOutputs:
    def __init__(self, runners: list[OutputRunner], fmt: StreamFormat, *, stamps: bool = False) -> None:
        """stamps: bench mode; every frame carries its number as a frame code (transport.stamps),
        so a receiver can tell which frame it shows beside which sound."""
        self.runners, self.fmt, self.stamps = runners, fmt, stamps

    def _planes(self, frame: VideoFrame) -> np.ndarray:
        planes = planes_from_rgb(frame.image, self.fmt.width, self.fmt.height)
        if self.stamps:
            stamp_yuv420p(planes, FrameStamp(frame.pts))
        return planes

    async def run(self, session: Session, until: float | None = None) -> None:
        """Feed the outputs until the session ends or its clock reaches `until`."""

        async def video() -> None:
            async for frame in session.frames():
                if until is not None and frame.due >= until:
                    return
                # Scaling to 720p takes milliseconds: a thread, not the event loop.
                planes = await asyncio.to_thread(self._planes, frame)
                for runner in self.runners:
                    runner.put_video(planes, frame.pts)

        async def voice() -> None:
            async for chunk in session.audio_out():
                if until is not None and chunk.due >= until:
                    return
                pcm = pcm16(chunk.samples)
                for runner in self.runners:
                    runner.put_audio(pcm, chunk.pts)

        await asyncio.gather(video(), voice())

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Finish every output (files complete); the URLs of those that did not in time."""
        return [r.sink.url for r in self.runners if not r.stop(timeout)]

    def stats(self) -> list[dict[str, object]]:
        return [r.stats() for r in self.runners]
