"""One source track shared by every peer of a session, each peer with a bounded backlog.

aiortc's `MediaRelay` gives a buffered subscriber an unbounded queue: a viewer whose connection
stalls (a paused OBS source, a congested link) keeps every frame the engine makes, and the server's
memory grows for as long as it stalls. Here every subscriber holds at most `limit` frames and
loses its oldest first: video keeps only the newest frame (a late frame is worth nothing), audio
keeps a short backlog so that a brief stall costs no sound and a long one costs only its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

Media = Frame | Packet


class RelayedTrack(MediaStreamTrack):
    """A subscriber's view of the relayed source: the frames since it last read, up to `limit`."""

    def __init__(self, relay: BoundedRelay, limit: int) -> None:
        super().__init__()
        self.kind = relay.source.kind
        self._relay: BoundedRelay | None = relay
        self._frames: deque[Media | None] = deque(maxlen=limit)
        self._arrived = asyncio.Event()
        self.dropped = 0  # frames lost because this subscriber did not read them in time

    def offer(self, frame: Media | None) -> None:
        if len(self._frames) == self._frames.maxlen:  # the oldest frame makes room
            self.dropped += 1
            if self._relay is not None:
                self._relay.dropped += 1
        self._frames.append(frame)
        self._arrived.set()

    @property
    def backlog(self) -> int:
        return len(self._frames)

    async def recv(self) -> Media:
        if self.readyState != "live" or self._relay is None:
            raise MediaStreamError
        self._relay.start()
        while not self._frames:
            self._arrived.clear()
            await self._arrived.wait()
        frame = self._frames.popleft()
        if frame is None:  # the source ended
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        if self._relay is not None:
            self._relay.unsubscribe(self)
            self._relay = None


class BoundedRelay:
    """Reads `source` once (from the first subscriber's first read) and hands every frame to each
    subscriber's bounded backlog."""

    def __init__(self, source: MediaStreamTrack, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a relay backlog holds at least 1 frame, got {limit}")
        self.source, self.limit = source, limit
        self._subscribers: set[RelayedTrack] = set()
        self._reader: asyncio.Task | None = None
        self.dropped = 0  # frames lost by all its subscribers, those gone included

    def subscribe(self) -> RelayedTrack:
        track = RelayedTrack(self, self.limit)
        self._subscribers.add(track)
        return track

    def unsubscribe(self, track: RelayedTrack) -> None:
        self._subscribers.discard(track)

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            try:
                frame: Media | None = await self.source.recv()
            except MediaStreamError:
                frame = None
            for track in list(self._subscribers):
                track.offer(frame)
            if frame is None:
                return

    async def close(self) -> None:
        """Stop reading the source (the subscribers' reads then end)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for track in list(self._subscribers):
            track.offer(None)
