"""`ihuman serve`: the HTTP side of the server (aiohttp) and its start-up.

Routes: `GET /` (the client page) and `/client/*` (its files), `POST /offer`
(SDP offer -> answer, for a talker or a viewer), `POST /avatars` (upload a
reference picture), `GET /avatars`, `GET /sessions/{id}` (running, or why it
ended), `GET /health`, `GET /metrics`. The sessions themselves run in a
SessionHost: this process's engine, or a fleet of Ray workers.

Security: binds 127.0.0.1 unless told otherwise, and refuses to listen
anywhere else without a token; with a token, every route checks it (an
`Authorization: Bearer` header or a `token` query parameter, compared in
constant time). Bodies, SDP, images (bytes, pixels, formats) and the number
of sessions are limited; bad input gets a 4xx with a message.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from aiortc import RTCSessionDescription

from engine.exceptions import EngineError
from engine.media.framing import framer
from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions
from transport import codecs, ice, retransmission
from transport.avatars import MAX_UPLOAD_BYTES, Avatar, AvatarStore
from transport.errors import RequestError
from transport.limits import RateLimit
from transport.origins import origin_middleware, served_names
from transport.registry import SessionRegistry
from transport.session import BenchProbe

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

CLIENT_DIR = Path(__file__).resolve().parents[1] / "client_web"
CLIENT_FILES = {"index.html", "app.js", "msgpack.js", "style.css"}
MAX_SDP_BYTES = 64 * 1024
MAX_JSON_BYTES = MAX_SDP_BYTES + 4096
MAX_TEXT_CHARS = 512
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None  # required for every route when set (and to listen beyond loopback)
    max_sessions: int = 2  # concurrent avatar sessions (each runs the engine)
    ice_servers: tuple[str, ...] = ()  # stun:/turn: URLs; none by default (no traffic to third parties)
    ice_addresses: tuple[str, ...] | None = None  # host candidates offered (None: all + loopback)
    connect_timeout_s: float = 30.0  # a peer that has not connected by then is dropped
    video_size: tuple[int, int] = (1280, 720)
    session_options: SessionOptions = field(default_factory=SessionOptions)
    avatar_dir: Path | None = None  # demo pictures (a bundle's avatars/), offered in the page's picker
    face_check: bool = True  # uploads: frame photos by their face, refuse photos without one
    bench: BenchProbe | None = None  # measured by `ihuman bench`: stamp frames, maybe add a delay
    outputs: tuple[str, ...] = ()  # every talker session also goes to these (transport.outputs)
    public_hosts: tuple[str, ...] = ()  # host names served besides loopback and --host (origins.py)
    # Per client address: offers and uploads (each costs engine or decoder work), a burst then a rate.
    requests_per_s: float = 1.0
    request_burst: int = 10
    max_viewers: int = 8  # receive-only peers per session


DRAIN_S = 4.0  # sessions get this long to end cleanly when the server stops (then it exits)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: ServerSettings) -> None:
    if not is_loopback(settings.host) and not settings.token:
        raise EngineError(
            f"refusing to listen on {settings.host} without --token: anyone who can reach it could "
            "use the engine; pass --token SECRET (or bind 127.0.0.1)"
        )
    if settings.max_sessions < 1:
        raise EngineError("--max-sessions must be at least 1")


def _token_middleware(token: str | None) -> Callable:
    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None:
            return await handler(request)
        given = request.query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer ") :]
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError("missing or wrong token", 401)
        return await handler(request)

    return check_token


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """User errors -> their status with a JSON message; anything else -> 500, logged."""
    try:
        return await handler(request)
    except RequestError as err:
        return web.json_response({"error": str(err)}, status=err.status, headers=err.headers)
    except web.HTTPException as err:
        if err.status >= 400:
            return web.json_response({"error": err.reason}, status=err.status)
        raise
    except EngineError as err:
        return web.json_response({"error": str(err)}, status=400)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


async def _json_body(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise RequestError(f"expected application/json, got {request.content_type}", 415)
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise RequestError(f"body of {request.content_length} bytes; the limit is {MAX_JSON_BYTES}", 413)
    raw = await request.content.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise RequestError(f"body over the {MAX_JSON_BYTES}-byte limit", 413)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object")
    return body


def _string(body: dict, name: str, limit: int, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(f"missing {name!r}")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise RequestError(f"{name!r} must be a string of at most {limit} characters")
    return value


def prepare_webrtc(settings: ServerSettings) -> None:
    """What aiortc and aioice read from module globals, set for the whole process: our H.264
    encoder settings (codecs.install), the packets kept for retransmission
    (retransmission.install) and the ICE host addresses (ice.use_host_addresses).
    `ihuman serve` calls it once before making the Server; a Server does not change the process."""
    codecs.install()
    retransmission.install()
    ice.use_host_addresses(settings.ice_addresses)


class SessionHost(Protocol):
    """Where the server's avatar sessions run: a SessionRegistry in this process (`ihuman serve`),
    or a fleet of workers on Ray (`ihuman serve --ray`, transport.fleet). The HTTP side is the same
    for both."""

    max_sessions: int

    async def talker(
        self, offer: RTCSessionDescription, avatar: str | None, text: str | None
    ) -> tuple[str, str]: ...
    async def viewer(self, offer: RTCSessionDescription, session_id: str) -> str: ...
    async def close_all(self, notice: str | None = None) -> None: ...
    async def share_avatar(self, avatar: Avatar) -> None: ...
    async def warm_up(self) -> None: ...
    async def metrics_text(self) -> bytes: ...
    def running(self) -> int: ...
    def session_state(self, session_id: str) -> dict[str, str]: ...
    def about(self) -> dict[str, object]: ...


def avatar_store(config: Config, settings: ServerSettings) -> AvatarStore:
    """The pictures talkers pick from: the demo ones (settings.avatar_dir) and uploads, which are
    framed by their face unless the face check is off."""
    avatars = AvatarStore(frame=framer(config, settings.face_check, "the uploaded image"))
    if settings.avatar_dir is not None and settings.avatar_dir.is_dir():
        avatars.add_folder(settings.avatar_dir)
    return avatars


def talkers_default(
    avatars: AvatarStore, default_avatar: Callable[[], object], *, explicit_avatar: bool
) -> Callable[[], object]:
    """The picture of talkers who pick none: `default_avatar` — unless the demo pictures exist and
    the default was not chosen explicitly (--avatar), then the first demo picture."""
    demo = avatars.first_demo()
    return (lambda: demo.image) if demo is not None and not explicit_avatar else default_avatar


def local_server(
    engine: Engine,
    settings: ServerSettings,
    default_avatar: Callable[[], object],
    *,
    explicit_avatar: bool = False,
) -> Server:
    """The single-process server: every session runs on this process's engine."""
    check_settings(settings)
    avatars = avatar_store(engine.config, settings)
    picture = talkers_default(avatars, default_avatar, explicit_avatar=explicit_avatar)
    sessions = session_registry(engine, avatars, settings, picture)
    return Server(settings, avatars, sessions)


def session_registry(
    engine: Engine, avatars: AvatarStore, settings: ServerSettings, default_avatar: Callable[[], object]
) -> SessionRegistry:
    """The sessions of one process (the single-process server's, or one fleet worker's)."""
    rtc_config = ice.configuration(settings.ice_servers)
    return SessionRegistry(
        engine,
        avatars,
        default_avatar,
        lambda: rtc_config,
        max_sessions=settings.max_sessions,
        connect_timeout_s=settings.connect_timeout_s,
        options=settings.session_options,
        video_size=settings.video_size,
        bench=settings.bench,
        outputs=settings.outputs,
        max_viewers=settings.max_viewers,
    )


class Server:
    """The HTTP side: the page, offers, avatars, health and metrics, in front of a SessionHost."""

    def __init__(self, settings: ServerSettings, avatars: AvatarStore, sessions: SessionHost) -> None:
        check_settings(settings)
        self.settings, self.avatars, self.sessions = settings, avatars, sessions
        self.requests = RateLimit(settings.requests_per_s, settings.request_burst)

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                _errors,
                origin_middleware(served_names(self.settings.host, self.settings.public_hosts)),
                _token_middleware(self.settings.token),
            ],
            client_max_size=MAX_UPLOAD_BYTES + 1024,
        )
        app.router.add_get("/", self.page)
        app.router.add_get("/client/{name}", self.client_file)
        app.router.add_post("/offer", self.offer)
        app.router.add_post("/avatars", self.upload_avatar)
        app.router.add_get("/avatars", self.list_avatars)
        app.router.add_get("/avatars/{avatar_id}", self.avatar_thumbnail)
        app.router.add_get("/sessions/{session_id}", self.session_state)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, _app: web.Application) -> None:
        await self.sessions.close_all()

    # ----- routes -------------------------------------------------------------------------------
    async def page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(CLIENT_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def client_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in CLIENT_FILES:  # a fixed list: no path ever reaches the file system
            raise RequestError(f"no client file {name!r}", 404)
        return web.FileResponse(CLIENT_DIR / name, headers={"Cache-Control": "no-store"})

    def _limit(self, request: web.Request) -> None:
        if not self.requests.allow(request.remote or "?"):
            raise RequestError(
                "too many requests from this address; try again shortly",
                429,
                headers={"Retry-After": str(self.requests.retry_after())},
            )

    async def offer(self, request: web.Request) -> web.StreamResponse:
        self._limit(request)
        body = await _json_body(request)
        sdp = _string(body, "sdp", MAX_SDP_BYTES, required=True)
        if body.get("type") != "offer" or not sdp or not sdp.startswith("v=0"):
            raise RequestError("expected {'type': 'offer', 'sdp': 'v=0...'}")
        offer = RTCSessionDescription(sdp=sdp, type="offer")
        role = body.get("role", "talker")
        if role == "viewer":
            session_id = _string(body, "session", 64, required=True)
            assert session_id is not None
            answer = await self.sessions.viewer(offer, session_id)
        elif role == "talker":
            avatar = _string(body, "avatar", 64)
            text = _string(body, "text", MAX_TEXT_CHARS)
            session_id, answer = await self.sessions.talker(offer, avatar, text)
        else:
            raise RequestError(f"role must be 'talker' or 'viewer', not {role!r}")
        return web.json_response({"type": "answer", "sdp": answer, "session": session_id})

    async def upload_avatar(self, request: web.Request) -> web.StreamResponse:
        self._limit(request)
        if not request.content_type.startswith("image/"):
            kind = request.content_type
            raise RequestError(f"send the picture as image/png, image/jpeg or image/webp, not {kind}", 415)
        size = request.content_length
        if size is not None and size > MAX_UPLOAD_BYTES:
            raise RequestError(f"image of {size} bytes; the limit is {MAX_UPLOAD_BYTES}", 413)
        data = await request.content.read(MAX_UPLOAD_BYTES + 1)
        avatar = self.avatars.add(data)
        await self.sessions.share_avatar(avatar)  # a fleet's workers have it before the reply
        _, height, width = avatar.image.shape
        return web.json_response({"id": avatar.id, "width": width, "height": height}, status=201)

    async def list_avatars(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"avatars": self.avatars.listing()})

    async def avatar_thumbnail(self, request: web.Request) -> web.StreamResponse:
        avatar = self.avatars.get(request.match_info["avatar_id"])
        return web.Response(body=avatar.thumbnail, content_type="image/png")

    async def session_state(self, request: web.Request) -> web.StreamResponse:
        """Whether a session runs, or why it ended: what a page asks when its connection drops
        (on a fleet, a worker that died cannot tell its clients itself)."""
        return web.json_response(self.sessions.session_state(request.match_info["session_id"]))

    async def health(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "status": "ok",
                "sessions": self.sessions.running(),
                "max_sessions": self.sessions.max_sessions,
                **self.sessions.about(),
            }
        )

    async def prometheus(self, _request: web.Request) -> web.StreamResponse:
        text = await self.sessions.metrics_text()
        return web.Response(body=text, content_type="text/plain", charset="utf-8")


async def run(server: Server, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until cancelled; on_ready(url) once listening."""
    await server.sessions.warm_up()  # before the first caller, who would otherwise wait through it
    runner = web.AppRunner(server.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, server.settings.host, server.settings.port)
    await site.start()
    host = server.settings.host if ":" not in server.settings.host else f"[{server.settings.host}]"
    url = f"http://{host}:{server.settings.port}/"
    if server.settings.token:
        url += f"?token={server.settings.token}"
    log.info("serving %s with %s", url, server.sessions.about())
    if on_ready:
        on_ready(url)
    # SIGTERM (a service manager, a container stop) and Ctrl-C drain instead of dying mid-write:
    # every client is told, sessions close (recordings complete), then the listener goes.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
        log.info("stopping: ending %d session(s)", server.sessions.running())
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        try:
            await asyncio.wait_for(server.sessions.close_all("the server is stopping"), DRAIN_S)
        finally:
            await runner.cleanup()
