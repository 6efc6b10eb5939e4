"""One avatar session on the network: the engine session, its tracks, relays, peers and tasks.

The talker's microphone is fed in here (`ingest`), the once-a-second stats go out to every peer
(`push_stats`), and `release` lets go of everything the session holds on the network side; the
engine session itself is closed by the registry that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.streaming.session import Session, SessionClosedError
from transport import messages
from transport.outputs import OutputRunner
from transport.relay import BoundedRelay
from transport.stamps import MarkListener
from transport.tracks import MicrophoneIngest, SessionAudioTrack, SessionVideoTrack

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
# Audio frames (20 ms) a peer may fall behind before it loses the oldest: a short stall costs no
# sound, a stalled viewer cannot grow the server's memory. Video keeps only the newest frame.
AUDIO_BACKLOG_FRAMES = 50


@dataclass(frozen=True)
class BenchProbe:
    """`ihuman serve --bench-stamps`: frames carry a code the harness reads (stamps.py); an
    `extra_delay_ms` holds the outgoing video and audio back after the engine, from
    `extra_delay_after_s` into the session on, so that the harness can check that it measures what
    it should: the step shows in its numbers, in none of the server's."""

    extra_delay_ms: float = 0.0
    extra_delay_after_s: float = 0.0

    def delay(self) -> tuple[float, float]:
        return self.extra_delay_ms / 1000, self.extra_delay_after_s


@dataclass
class Peer:
    pc: RTCPeerConnection
    role: str  # "talker" or "viewer"
    channel: RTCDataChannel | None = None

    def send(self, data: bytes) -> None:
        """Send on the data channel if it is open; a peer without one simply misses the message."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(data)


@dataclass
class AvatarSession:
    id: str
    session: Session
    video: SessionVideoTrack
    audio: SessionAudioTrack
    video_relay: BoundedRelay = field(init=False)
    audio_relay: BoundedRelay = field(init=False)
    peers: list[Peer] = field(default_factory=list)
    tasks: set[asyncio.Task] = field(default_factory=set)
    marks: MarkListener | None = None  # bench mode: the marks heard, for the frame stamps
    outputs: list[OutputRunner] = field(default_factory=list)  # `ihuman serve --output`
    muted: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        self.video_relay = BoundedRelay(self.video, limit=1)
        self.audio_relay = BoundedRelay(self.audio, limit=AUDIO_BACKLOG_FRAMES)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run `coro` as one of the session's tasks: cancelled when the session is released. One
        that raises fails the session (its peers are told why and it ends), as a failing stage
        does: a microphone whose audio can no longer be read would otherwise leave the avatar
        silent and idle for the rest of the call, with nothing said."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.id}-{name}")
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, name))
        return task

    def _task_done(self, task: asyncio.Task, name: str) -> None:
        self.tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        if self.closed or isinstance(error, SessionClosedError):  # it ended with the session
            return
        log.error("%s: %s failed", self.id, name, exc_info=error)
        self.session.fail(f"its {name} failed: {type(error).__name__}: {error}")

    async def ingest(self, track: MediaStreamTrack) -> None:
        """Feed the talker's microphone into the engine session until the track or session ends."""
        converter = MicrophoneIngest(self.session.timeline.rate)
        # Placed by the sender's RTP time: a burst after a busy event loop keeps its place, a
        # sender that sends nothing in silence leaves that much silence.
        producer = self.session.producer_clock()
        while not self.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = converter.convert(frame)
            if self.muted:
                pcm[:] = 0.0
            if pcm.size:
                pts = self.session.push_live_audio(pcm, producer, frame.pts, frame.time_base)
                if self.marks is not None:
                    self.marks.feed(pcm, pts)

    async def push_stats(self) -> None:
        while not self.closed:
            await asyncio.sleep(STATS_INTERVAL_S)
            data = messages.stats_message(self.session.snapshot(), [r.stats() for r in self.outputs])
            for peer in self.peers:
                peer.send(data)

    async def feed_outputs(self) -> None:
        """Hand what the peers get (720p frames, the delayed voice) to the session's outputs, as a
        subscriber of the same relays: a stalled output loses frames in its own queue."""
        video, audio = self.video_relay.subscribe(), self.audio_relay.subscribe()
        fps, rate = self.session.timeline.fps, self.session.timeline.rate

        async def pump(track: MediaStreamTrack, hand: Callable[[Any], None]) -> None:
            with contextlib.suppress(MediaStreamError):
                while not self.closed:
                    hand(await track.recv())

        # Indexes from each frame's own time base: the WebRTC sender may hand a shared frame on
        # with another one (measured: microseconds).
        def picture(frame: Any) -> None:
            planes, index = frame.to_ndarray(), round(float(frame.pts * frame.time_base) * fps)
            for runner in self.outputs:
                runner.put_video(planes, index)

        def voice(frame: Any) -> None:
            pcm = np.ascontiguousarray(frame.to_ndarray()[0, ::2])  # the stereo track: each sample twice
            index = round(float(frame.pts * frame.time_base) * rate)
            for runner in self.outputs:
                runner.put_audio(pcm, index)

        try:
            await asyncio.gather(pump(video, picture), pump(audio, voice))
        finally:
            video.stop()
            audio.stop()

    async def drop_peer(self, peer: Peer) -> None:
        if peer in self.peers:
            self.peers.remove(peer)
            await peer.pc.close()

    async def release(self) -> None:
        """Cancel the session's tasks, close its peers and relays (idempotent, from any task)."""
        self.closed = True
        current = asyncio.current_task()
        tasks = [t for t in self.tasks if t is not current]
        for task in tasks:
            task.cancel()
        for peer in list(self.peers):
            with contextlib.suppress(Exception):  # a peer that is already gone
                await peer.pc.close()
        self.peers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.video_relay.close()
        await self.audio_relay.close()
        runners, self.outputs = self.outputs, []
        for runner in runners:  # recordings complete, streams closed; each may block for a while
            await asyncio.to_thread(runner.stop)
