"""`ihuman serve`: the WebRTC server and its browser page."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from engine.data.clip import make_clip
from engine.exceptions import EngineError
from engine.media.framing import framer
from engine.media.image import read_image
from engine.parts import DEFAULT_BUNDLE, Parts
from engine.presets import PRESETS
from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions
from ihuman import arguments, loading, tuning
from transport.outputs import OutputError, StreamFormat, output_sink

DEFAULT_AVATAR_SEED = 1_000_003  # a held-out procedural character


def _default_avatar(parts: Parts, image: Path | None, face_check: bool) -> Callable[[], torch.Tensor]:
    """The picture a talker gets without uploading one: --avatar, else a procedural character."""
    if image is not None:
        picture = framer(parts.config, face_check, str(image))(read_image(image))
    else:
        hr = parts.config.hr
        picture = make_clip(DEFAULT_AVATAR_SEED, 1 / parts.config.time.fps, hr.width, hr.height).frames[0]
    return lambda: picture


def cmd_serve(args: argparse.Namespace) -> int:
    # The WebRTC stack loads for `serve` only: a training or rendering machine needs no aiortc.
    try:
        import uvloop  # noqa: PLC0415

        from transport.server import Server, ServerSettings, prepare_webrtc  # noqa: PLC0415
        from transport.server import run as serve  # noqa: PLC0415
        from transport.session import BenchProbe  # noqa: PLC0415
    except ImportError as err:
        raise EngineError(
            f"ihuman serve needs the WebRTC stack ({err.name} is missing): pip install 'infinityhuman[serve]'"
        ) from None

    if min(args.bench_extra_delay_ms, args.bench_extra_delay_after_s) < 0:
        raise EngineError("--bench-extra-delay-ms and --bench-extra-delay-after-s take values >= 0")
    if args.bench_extra_delay_ms and not args.bench_stamps:
        raise EngineError("--bench-extra-delay-ms goes with --bench-stamps")
    try:
        for url in args.output:  # checked before the model loads
            output_sink(url, StreamFormat(*args.video_size))
    except OutputError as err:
        raise EngineError(str(err)) from None
    settings_values = tuning.parse_settings(args.set)
    tuning.apply_process_settings(settings_values)
    parts = loading.load_parts(args, allow_random_default=True)
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        token=args.token,
        max_sessions=args.max_sessions,
        ice_servers=tuple(args.ice_server),
        ice_addresses=tuple(args.ice_address) if args.ice_address else None,
        video_size=args.video_size,
        session_options=tuning.session_options(
            settings_values, SessionOptions(target_delay_ms=args.delay_ms)
        ),
        face_check=not args.no_face_check,
        outputs=tuple(args.output),
        public_hosts=tuple(args.public_host),
        bench=BenchProbe(args.bench_extra_delay_ms, args.bench_extra_delay_after_s)
        if args.bench_stamps
        else None,
    )
    avatars = (args.bundle or DEFAULT_BUNDLE) / "avatars"
    settings = dataclasses.replace(settings, avatar_dir=avatars)
    default = _default_avatar(parts, args.avatar, loading.face_check(args, args.avatar))
    prepare_webrtc(settings)
    server = Server(Engine(parts), settings, default, explicit_avatar=args.avatar is not None)

    def ready(url: str) -> None:
        print(f"InfinityHuman Live: open {url} (Ctrl-C stops)", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while it drains
            uvloop.run(serve(server, on_ready=ready))
    except OSError as err:  # the port is taken, the address is not ours, ...
        raise EngineError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="the WebRTC server: browser client, viewers for OBS")
    srv.add_argument(
        "--host",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; beyond loopback needs --token)",
    )
    srv.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    srv.add_argument("--bundle", type=Path, help=f"trained bundle (default: {DEFAULT_BUNDLE})")
    srv.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="random weights of a preset")
    srv.add_argument("--random-weights", action="store_true", help="untrained parts of --preset (speed only)")
    srv.add_argument("--avatar", type=Path, help="default reference picture (framed by its face)")
    srv.add_argument(
        "--no-face-check",
        action="store_true",
        help="use uploads and --avatar as they are instead of framing them by their face",
    )
    srv.add_argument("--token", help="required on every request (needed to listen beyond loopback)")
    srv.add_argument(
        "--public-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients use to reach the server (repeatable; loopback names and --host always)",
    )
    srv.add_argument("--max-sessions", type=int, default=2, help="concurrent avatar sessions (default 2)")
    srv.add_argument("--ice-server", action="append", default=[], help="stun:/turn:user:pass@host URL")
    srv.add_argument(
        "--ice-address",
        action="append",
        default=[],
        help="offer only this local address as an ICE host candidate (repeatable; default: all + 127.0.0.1)",
    )
    srv.add_argument(
        "--video-size",
        type=arguments.resolution,
        default=(1280, 720),
        help="video sent, WxH (default 1280x720)",
    )
    srv.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="URL",
        help="every talker session also goes here (repeatable; as `ihuman live --output`)",
    )
    srv.add_argument("--delay-ms", type=float, help="target delay (default: from the measured compute)")
    srv.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a session setting: " + "; ".join(f"{k}: {v.help}" for k, v in tuning.SETTINGS.items()),
    )
    loading.add_device_arguments(srv)
    srv.add_argument(
        "--bench-stamps",
        action="store_true",
        help="for `ihuman bench`: stamp every frame with a code (it shows in the picture's corner)",
    )
    srv.add_argument(
        "--bench-extra-delay-ms",
        type=float,
        default=0.0,
        help="with --bench-stamps: send video and audio this much later (checks that the harness sees it)",
    )
    srv.add_argument(
        "--bench-extra-delay-after-s",
        type=float,
        default=0.0,
        help="... from this many seconds into each session on (default: from the start)",
    )
    srv.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    srv.set_defaults(func=cmd_serve)
