"""Avatar sessions on the network: one engine session, its talker and any number of viewers.

The talker's peer connection sends the microphone and receives the avatar;
viewers (an OBS Browser Source, a second participant) receive the same
tracks through a bounded relay (relay.py), so the engine runs once per avatar. A session
ends when its talker leaves (peer closed, ICE failed) or never connects in
time, and then releases everything: peers, tasks, the engine session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.streaming.engine import Engine
from engine.streaming.session import Session, SessionOptions
from transport import messages
from transport.avatars import AvatarStore
from transport.codecs import prefer_codecs
from transport.errors import RequestError
from transport.relay import BoundedRelay
from transport.sdp import check_offer
from transport.tracks import MicrophoneIngest, SessionAudioTrack, SessionVideoTrack

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
# Audio frames (20 ms) a peer may fall behind before it loses the oldest: a short stall costs no
# sound, a stalled viewer cannot grow the server's memory. Video keeps only the newest frame.
AUDIO_BACKLOG_FRAMES = 50


@dataclass
class Peer:
    pc: RTCPeerConnection
    role: str  # "talker" or "viewer"
    channel: RTCDataChannel | None = None


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
    muted: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        self.video_relay = BoundedRelay(self.video, limit=1)
        self.audio_relay = BoundedRelay(self.audio, limit=AUDIO_BACKLOG_FRAMES)

    def spawn(self, coro: object, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.id}-{name}")  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class SessionRegistry:
    def __init__(
        self,
        engine: Engine,
        avatars: AvatarStore,
        default_avatar: Callable[[], object],
        configuration: Callable[[], RTCConfiguration],
        *,
        max_sessions: int,
        connect_timeout_s: float = 30.0,
        options: SessionOptions | None = None,
        video_size: tuple[int, int] = (1280, 720),
    ) -> None:
        self.engine, self.avatars = engine, avatars
        self.default_avatar = default_avatar
        self.configuration = configuration
        self.max_sessions = max_sessions
        self.connect_timeout_s = connect_timeout_s
        self.options = options or SessionOptions()
        self.video_size = video_size
        self.sessions: dict[str, AvatarSession] = {}
        self.started_total = 0
        self.rejected_total = 0

    # ----- offers ---------------------------------------------------------------------------------
    async def talker(
        self, offer: RTCSessionDescription, avatar: str | None, text: str | None
    ) -> tuple[str, str]:
        """Start a session for a talker's offer; returns (session id, answer SDP)."""
        if len(self.sessions) >= self.max_sessions:
            self.rejected_total += 1
            raise RequestError(
                f"all {self.max_sessions} avatar sessions are in use; try again when one ends", 503
            )
        check_offer(offer)  # before any engine work
        image = self.avatars.get(avatar).image if avatar else self.default_avatar()
        session = await self.engine.open_session(image, text=text, options=self.options)
        live = AvatarSession(
            id=secrets.token_urlsafe(9),
            session=session,
            video=SessionVideoTrack(session, *self.video_size),
            audio=SessionAudioTrack(session),
        )
        self.sessions[live.id] = live
        self.started_total += 1
        try:
            answer = await self._connect(live, offer, "talker")
        except Exception:
            await self.close(live)
            raise
        live.spawn(self._stats(live), "stats")
        return live.id, answer

    async def viewer(self, offer: RTCSessionDescription, session_id: str) -> str:
        """Join a viewer (receive-only) to a running session; returns the answer SDP."""
        live = self.sessions.get(session_id)
        if live is None or live.closed:
            raise RequestError(f"no running avatar session {session_id!r}", 404)
        check_offer(offer)
        return await self._connect(live, offer, "viewer")

    async def _connect(self, live: AvatarSession, offer: RTCSessionDescription, role: str) -> str:
        pc = RTCPeerConnection(self.configuration())
        peer = Peer(pc, role)
        live.peers.append(peer)

        @pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            peer.channel = channel
            channel.send(messages.encode("hello", session=live.id, role=role))

            @channel.on("message")
            def on_message(data: bytes | str) -> None:
                self._on_message(live, peer, data)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and role == "talker":
                live.spawn(self._ingest(live, track), "microphone")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("%s: %s peer %s", live.id, role, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                if role == "talker":
                    await self.close(live)
                else:
                    await self._drop_peer(live, peer)

        try:
            await pc.setRemoteDescription(offer)
        except (ValueError, TypeError) as err:
            raise RequestError(f"the SDP offer cannot be used: {err}") from None
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                prefer_codecs(transceiver)
                pc.addTrack(live.video_relay.subscribe())
            elif transceiver.kind == "audio":
                pc.addTrack(live.audio_relay.subscribe())
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        live.spawn(self._connect_timeout(live, peer), f"{role}-timeout")
        return pc.localDescription.sdp

    async def _connect_timeout(self, live: AvatarSession, peer: Peer) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if peer.pc.connectionState != "connected":
            log.warning("%s: %s did not connect within %.0f s", live.id, peer.role, self.connect_timeout_s)
            if peer.role == "talker":
                await self.close(live)
            else:
                await self._drop_peer(live, peer)

    # ----- media and messages ---------------------------------------------------------------------
    async def _ingest(self, live: AvatarSession, track: MediaStreamTrack) -> None:
        converter = MicrophoneIngest(live.session.timeline.rate)
        while not live.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = converter.convert(frame)
            if live.muted:
                pcm[:] = 0.0
            if pcm.size:
                live.session.push_audio(pcm)

    async def _stats(self, live: AvatarSession) -> None:
        while not live.closed:
            await asyncio.sleep(STATS_INTERVAL_S)
            data = messages.stats_message(live.session.snapshot())
            for peer in live.peers:
                if peer.channel is not None and peer.channel.readyState == "open":
                    peer.channel.send(data)

    def _on_message(self, live: AvatarSession, peer: Peer, data: bytes | str) -> None:
        try:
            message = messages.decode(data)
            if peer.role != "talker":
                raise messages.MessageError("viewers cannot control the session")
            kind = message["type"]
            if kind == "interrupt":
                live.session.interrupt()
            elif kind == "set_text":
                live.session.set_text(message["text"])
            elif kind == "mute":
                live.muted = message["muted"]
            elif kind == "set_avatar":
                image = self.avatars.get(message["avatar"]).image
                live.spawn(live.session.set_reference(image), "set-avatar")
        except (messages.MessageError, RequestError) as err:
            if peer.channel is not None and peer.channel.readyState == "open":
                peer.channel.send(messages.encode("error", message=str(err)))

    # ----- closing --------------------------------------------------------------------------------
    async def _drop_peer(self, live: AvatarSession, peer: Peer) -> None:
        if peer in live.peers:
            live.peers.remove(peer)
            await peer.pc.close()

    async def close(self, live: AvatarSession) -> None:
        """End a session and release everything it holds (idempotent)."""
        if live.closed:
            return
        live.closed = True
        self.sessions.pop(live.id, None)
        current = asyncio.current_task()
        tasks = [t for t in live.tasks if t is not current]
        for task in tasks:
            task.cancel()
        for peer in list(live.peers):
            with contextlib.suppress(Exception):  # a peer that is already gone
                await peer.pc.close()
        live.peers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await live.video_relay.close()
        await live.audio_relay.close()
        await self.engine.close_session(live.session)
        log.info("%s: session closed", live.id)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(live) for live in list(self.sessions.values())))
