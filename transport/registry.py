"""The avatar sessions a server runs: admission, ids, who controls what, and closing.

One engine session per avatar session; a session ends when its talker leaves (peer closed, ICE
failed) or never connects in time, and then releases everything: peers, tasks, the engine
session. Peer mechanics are in peers.py, the data-channel commands in commands.py.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCSessionDescription

from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions
from transport import commands, messages
from transport.avatars import Avatar, AvatarStore
from transport.errors import RequestError
from transport.limits import RateLimit
from transport.metrics import metrics_registry, render
from transport.outputs import StreamFormat, runners, session_url
from transport.peers import PeerEvents, connect_peer
from transport.sdp import check_offer
from transport.session import AvatarSession, BenchProbe, Peer
from transport.stamps import MarkListener
from transport.tracks import SessionAudioTrack, SessionVideoTrack

log = logging.getLogger(__name__)

MESSAGES_PER_S = 20.0  # a talker's commands are clicks and keystrokes: far below this
MESSAGE_BURST = 40
ENDED_KEPT = 256  # why recent sessions ended, for the pages that ask (GET /sessions/{id})


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
        bench: BenchProbe | None = None,
        outputs: tuple[str, ...] = (),
        max_viewers: int = 8,
    ) -> None:
        self.engine, self.avatars = engine, avatars
        self.default_avatar = default_avatar
        self.configuration = configuration
        self.max_sessions = max_sessions
        self.connect_timeout_s = connect_timeout_s
        self.options = options or SessionOptions()
        self.video_size = video_size
        self.bench = bench
        self.outputs = outputs  # every talker session goes to these too (transport.outputs)
        self.max_viewers = max_viewers
        # Data-channel messages per peer: a burst, then a rate (a flood is dropped with one reply).
        self.messages = RateLimit(rate=MESSAGES_PER_S, burst=MESSAGE_BURST)
        self.sessions: dict[str, AvatarSession] = {}
        self.started_total = 0
        self.rejected_total = 0
        self.failed_total = 0  # sessions ended because a part of the engine failed
        self.ended: OrderedDict[str, str] = OrderedDict()  # session id -> why it ended (the newest)
        self._events = PeerEvents(on_message=self._on_message, on_gone=self._on_gone)
        self._metrics = metrics_registry(self)

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
        marks = MarkListener(session.timeline.rate) if self.bench is not None else None
        delay = self.bench.delay() if self.bench is not None else (0.0, 0.0)
        live = AvatarSession(
            id=secrets.token_urlsafe(9),
            session=session,
            video=SessionVideoTrack(session, *self.video_size, marks=marks, delay=delay),
            audio=SessionAudioTrack(session, delay=delay),
            marks=marks,
        )
        self.sessions[live.id] = live
        self.started_total += 1
        try:
            answer = await self._connect(live, offer, "talker")
        except Exception:
            await self.close(live)
            raise
        live.spawn(live.push_stats(), "stats")
        live.spawn(self._end_on_failure(live), "watch")
        # One session at a time holds the outputs: two sessions would fight over one stream URL.
        if self.outputs and not any(s.outputs for s in self.sessions.values()):
            fmt = StreamFormat(*self.video_size, session.timeline.fps, session.timeline.rate)
            live.outputs = runners([session_url(url, live.id) for url in self.outputs], fmt)
            live.spawn(live.feed_outputs(), "outputs")
        return live.id, answer

    async def viewer(self, offer: RTCSessionDescription, session_id: str) -> str:
        """Join a viewer (receive-only) to a running session; returns the answer SDP."""
        live = self.sessions.get(session_id)
        if live is None or live.closed:
            raise RequestError(f"no running avatar session {session_id!r}", 404)
        if sum(p.role == "viewer" for p in live.peers) >= self.max_viewers:
            raise RequestError(
                f"this session has its {self.max_viewers} viewers; try again when one leaves", 503
            )
        check_offer(offer)
        return await self._connect(live, offer, "viewer")

    async def _connect(self, live: AvatarSession, offer: RTCSessionDescription, role: str) -> str:
        return await connect_peer(
            live, offer, role, self.configuration(), self._events, self.connect_timeout_s
        )

    def _on_message(self, live: AvatarSession, peer: Peer, data: bytes | str) -> None:
        if not self.messages.allow(f"{live.id}:{id(peer)}"):
            if self.messages.refused % MESSAGE_BURST == 1:  # one reply per burst refused, not one each
                peer.send(messages.encode("error", message="too many messages; some were dropped"))
            return
        try:
            command = commands.decode(data)
            if peer.role != "talker":
                raise messages.MessageError("viewers cannot control the session")
            command.apply(live, self.avatars)
        except (messages.MessageError, RequestError) as err:
            peer.send(messages.encode("error", message=str(err)))

    async def _on_gone(self, live: AvatarSession, peer: Peer) -> None:
        if peer.role == "talker":
            await self.close(live, "the talker left")
        else:
            await live.drop_peer(peer)

    async def _end_on_failure(self, live: AvatarSession) -> None:
        """A session whose engine part failed is told so and ended; the others run on."""
        notice = f"the avatar session stopped: {await live.session.failed()}"
        for peer in live.peers:
            peer.send(messages.encode("error", message=notice))
        await asyncio.sleep(0.2)  # the message leaves before the peers close
        self.failed_total += 1
        await self.close(live, notice)

    async def close(self, live: AvatarSession, reason: str = "the session was closed") -> None:
        """End a session and release everything it holds (idempotent); `reason` is what
        GET /sessions/{id} says of it afterwards."""
        if live.closed:
            return
        self.sessions.pop(live.id, None)
        self.ended[live.id] = reason
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        await live.release()
        await self.engine.close_session(live.session)
        log.info("%s: session closed", live.id)

    async def close_all(self, notice: str | None = None) -> None:
        """End every session; with a notice, their peers are told why first."""
        running = list(self.sessions.values())
        if notice is not None and running:
            for live in running:
                for peer in live.peers:
                    peer.send(messages.encode("error", message=notice))
            await asyncio.sleep(0.2)  # the messages leave before the peers close
        reason = notice or "the server closed it"
        await asyncio.gather(*(self.close(live, reason) for live in running))

    # ----- what the HTTP side asks of its session host (transport.server.SessionHost) ------------
    def running(self) -> int:
        return len(self.sessions)

    def session_state(self, session_id: str) -> dict[str, str]:
        if session_id in self.sessions:
            return {"session": session_id, "state": "running"}
        if session_id in self.ended:
            return {"session": session_id, "state": "ended", "reason": self.ended[session_id]}
        raise RequestError(f"no avatar session {session_id!r}", 404)

    def about(self) -> dict[str, object]:
        return {"preset": self.engine.config.name, "weights": self.engine.parts.source}

    async def warm_up(self) -> None:
        if self.engine.parts.compiled:  # compiled generators are built in the warm-up: minutes
            log.info("warming up: building the compiled generators before taking calls")
            await self.engine.estimate()

    async def metrics_text(self) -> bytes:
        return render(self._metrics)

    async def share_avatar(self, avatar: Avatar) -> None:
        """Nothing to share: the sessions read this process's avatar store."""
