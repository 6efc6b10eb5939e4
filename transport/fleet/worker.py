"""One worker of a fleet: a Ray actor that owns an engine (and its GPU share) and the sessions on it.

The worker answers the offers the front hands it with its own peer connection, so its ICE
candidates are its own machine's addresses and the media never passes the front. Inside, it is
the single-process server's session registry: the same admission, peers, data channel, failure
handling and metrics. It keeps a copy of the fleet's pictures (the front pushes them), because a
talker may switch to any of them over the data channel.

Calls come back as plain dicts: an error a client should see is `{"error", "status"}` rather than
an exception, so that its status code survives the trip through Ray.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCSessionDescription
from torch import Tensor

from engine.parts import Parts
from engine.streaming.engine import Engine
from transport.avatars import Avatar, AvatarStore
from transport.errors import RequestError
from transport.heap import prepare_heap
from transport.server import ServerSettings, prepare_webrtc, session_registry

log = logging.getLogger(__name__)

Reply = dict[str, object]


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker is built from (pickled to each by Ray).

    load_parts: called on the worker, on its machine: a bundle's path must exist there (the
    embedded demo bundle always does). prepare_process: process-wide settings (the kernel backend).
    settings: the server's settings; its max_sessions is the sessions of one worker."""

    load_parts: Callable[[], Parts]
    settings: ServerSettings
    default_avatar: Tensor  # uint8 [3, H, W]: the picture of talkers who pick none
    prepare_process: Callable[[], None] = lambda: None


class FleetWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        prepare_heap()  # sessions for hours; before the engine's threads allocate (transport.heap)
        spec.prepare_process()
        engine = Engine(spec.load_parts())
        prepare_webrtc(spec.settings)
        self.avatars = AvatarStore(capacity=None)  # the front bounds the uploads and says what to forget
        self.sessions = session_registry(engine, self.avatars, spec.settings, lambda: spec.default_avatar)
        # A restarted worker is a new process with nothing of the old one: the front tells the
        # two apart by this token and ends the sessions the old one held.
        self.incarnation = secrets.token_hex(8)
        self.node = _node_address()

    async def ready(self) -> Reply:
        """Warm up (compiled generators are built here), then report as `status` does."""
        await self.sessions.warm_up()
        return await self.status()

    async def talker(self, sdp: str, avatar: str | None, text: str | None) -> Reply:
        try:
            session, answer = await self.sessions.talker(RTCSessionDescription(sdp, "offer"), avatar, text)
        except RequestError as err:
            return {"error": str(err), "status": err.status}
        return {"session": session, "sdp": answer}

    async def viewer(self, sdp: str, session: str) -> Reply:
        try:
            answer = await self.sessions.viewer(RTCSessionDescription(sdp, "offer"), session)
        except RequestError as err:
            return {"error": str(err), "status": err.status}
        return {"session": session, "sdp": answer}

    async def add_avatars(self, *avatars: Avatar) -> None:
        for avatar in avatars:
            self.avatars.keep(avatar)

    async def forget_avatar(self, avatar_id: str) -> None:
        self.avatars.forget(avatar_id)

    async def status(self) -> Reply:
        registry = self.sessions
        return {
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "node": self.node,
            "sessions": list(registry.sessions),
            "max_sessions": registry.max_sessions,
            "ended": dict(registry.ended),
            **registry.about(),
        }

    async def metrics(self) -> bytes:
        return await self.sessions.metrics_text()

    async def close_all(self, notice: str | None = None) -> None:
        await self.sessions.close_all(notice)


def _node_address() -> str:
    """The address Ray knows this worker's machine by (what its cluster was started with)."""
    import ray  # noqa: PLC0415 (this module imports without Ray: the front builds specs from it)

    here = ray.get_runtime_context().get_node_id()
    return next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == here), "?")
