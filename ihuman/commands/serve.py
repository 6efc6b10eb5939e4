"""`ihuman serve`: the WebRTC server and its browser page."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.config import Config
from engine.data.clip import make_clip
from engine.exceptions import EngineError
from engine.media.framing import framer
from engine.media.image import read_image
from engine.parts import DEFAULT_BUNDLE
from engine.presets import PRESETS
from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions
from ihuman import arguments, loading, tuning
from transport.outputs import OutputError, StreamFormat, output_sink

if TYPE_CHECKING:
    from transport.fleet.front import FleetSettings
    from transport.server import Server, ServerSettings

DEFAULT_AVATAR_SEED = 1_000_003  # a held-out procedural character


def _default_avatar(config: Config, image: Path | None, face_check: bool) -> Callable[[], torch.Tensor]:
    """The picture a talker gets without uploading one: --avatar, else a procedural character."""
    if image is not None:
        picture = framer(config, face_check, str(image))(read_image(image))
    else:
        hr = config.hr
        picture = make_clip(DEFAULT_AVATAR_SEED, 1 / config.time.fps, hr.width, hr.height).frames[0]
    return lambda: picture


def cmd_serve(args: argparse.Namespace) -> int:
    # The WebRTC stack loads for `serve` only: a training or rendering machine needs no aiortc.
    try:
        import uvloop  # noqa: PLC0415

        from transport.heap import prepare_heap  # noqa: PLC0415
        from transport.server import (  # noqa: PLC0415
            ServerSettings,
            check_settings,
            local_server,
            prepare_webrtc,
        )
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
    prepare_heap()  # before the model's and codecs' threads allocate (transport.heap)
    try:
        for url in args.output:  # checked before the model loads
            output_sink(url, StreamFormat(*args.video_size))
    except OutputError as err:
        raise EngineError(str(err)) from None
    settings_values = tuning.parse_settings(args.set)
    tuning.apply_process_settings(settings_values)
    fleet = fleet_settings(args)
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        token=args.token,
        max_sessions=fleet.sessions_per_worker if fleet else args.max_sessions,
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
        avatar_dir=(args.bundle or DEFAULT_BUNDLE) / "avatars",
    )
    check_settings(settings)
    if fleet is not None:
        server = _fleet_server(args, settings, fleet, settings_values)
    else:
        parts = loading.load_parts(args, allow_random_default=True)
        default = _default_avatar(parts.config, args.avatar, loading.face_check(args, args.avatar))
        prepare_webrtc(settings)
        server = local_server(Engine(parts), settings, default, explicit_avatar=args.avatar is not None)

    def ready(url: str) -> None:
        print(f"InfinityHuman Live: open {url} (Ctrl-C stops)", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while it drains
            uvloop.run(serve(server, on_ready=ready))
    except OSError as err:  # the port is taken, the address is not ours, ...
        raise EngineError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0


def fleet_settings(args: argparse.Namespace) -> FleetSettings | None:
    """--ray and its sizes, checked before anything starts (None: the single-process server)."""
    if args.ray is None:
        return None
    if args.output:
        raise EngineError(
            "--output goes with the single-process server, not --ray (one stream, many workers)"
        )
    if args.ray == LOCAL_RAY:
        # A Ray of this machine alone: its daemons listen on 127.0.0.1 only (Ray reads this when
        # it is imported; without it they listen on every address, reachable from the network).
        os.environ.setdefault(LOOPBACK_RAY, "0")
    try:
        from transport.fleet.front import FleetSettings  # noqa: PLC0415
    except ImportError as err:
        raise EngineError(
            f"ihuman serve --ray needs Ray ({err.name} is missing): pip install 'infinityhuman[scale]'"
        ) from None
    fleet = FleetSettings(
        min_workers=args.workers,
        max_workers=args.max_workers or args.workers,
        sessions_per_worker=args.sessions_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        idle_s=args.idle_s,
    )
    fleet.check()
    return fleet


def _fleet_server(
    args: argparse.Namespace, settings: ServerSettings, fleet: FleetSettings, process: dict[str, object]
) -> Server:
    """The front of a fleet: it frames pictures and places sessions; the workers hold the model."""
    import ray  # noqa: PLC0415

    from transport.fleet.front import Fleet  # noqa: PLC0415
    from transport.fleet.worker import WorkerSpec  # noqa: PLC0415
    from transport.server import Server, avatar_store, talkers_default  # noqa: PLC0415

    config = loading.load_config(args)
    avatars = avatar_store(config, settings)
    given = _default_avatar(config, args.avatar, loading.face_check(args, args.avatar))
    default = talkers_default(avatars, given, explicit_avatar=args.avatar is not None)()
    # A local Ray for `--ray` alone; an address (or `auto`) joins a running cluster.
    # One namespace for every front, so that a front restarted after a crash finds its workers.
    ray.init(address=None if args.ray == LOCAL_RAY else args.ray, namespace=RAY_NAMESPACE)
    spec = WorkerSpec(
        load_parts=functools.partial(loading.load_parts, _picklable(args), allow_random_default=True),
        settings=settings,
        default_avatar=default,
        prepare_process=functools.partial(tuning.apply_process_settings, process),
    )
    return Server(settings, avatars, Fleet(spec, avatars, fleet))


LOCAL_RAY = "local"
RAY_NAMESPACE = "infinityhuman"
LOOPBACK_RAY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": single-machine Ray, on loopback
PART_ARGUMENTS = ("bundle", "preset", "random_weights", "seed", "device", "precision", "compile")


def _picklable(args: argparse.Namespace) -> argparse.Namespace:
    """What load_parts reads of the arguments (the parsed namespace holds the subcommand's function)."""
    return argparse.Namespace(**{k: getattr(args, k) for k in PART_ARGUMENTS})


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
    scale = srv.add_argument_group("a fleet on Ray (pip install 'infinityhuman[scale]'; docs/scale.md)")
    scale.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        metavar="ADDRESS",
        help="run the sessions on Ray workers: alone, a Ray started here; `auto` or an address, a "
        "running cluster",
    )
    scale.add_argument("--workers", type=int, default=2, help="workers started (default 2)")
    scale.add_argument(
        "--max-workers", type=int, help="more workers started when the fleet is full (default: --workers)"
    )
    scale.add_argument(
        "--sessions-per-worker", type=int, default=2, help="sessions each worker takes (default 2)"
    )
    scale.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs each worker asks of Ray (default 0)"
    )
    scale.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs each worker asks of Ray (default 1)"
    )
    scale.add_argument(
        "--idle-s",
        type=float,
        default=300.0,
        help="spare places for a whole worker this long: one drains and goes (default 300)",
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
