"""`ihuman bench`: the latency harness (engine | webrtc), offline render speed, and comparisons."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.data.speech import speech_take
from engine.exceptions import EngineError
from engine.media.audio_file import AudioFile
from engine.parts import DEFAULT_BUNDLE
from engine.presets import PRESETS
from ihuman import arguments, loading, tuning
from ihuman.tuning import Setting

MODES = ("engine", "webrtc", "browser")
SPEECH_SEED = 11
# What a sweep or --set may vary besides the session settings: the call's codec and video size.
BENCH_SETTINGS: dict[str, Setting] = {
    **tuning.SETTINGS,
    "codec": Setting(lambda t: tuning.one_of("h264", "vp8")(t.lower()), "video codec of the call (h264|vp8)"),
    "video": Setting(lambda t: "x".join(map(str, arguments.resolution(t))), "video size of the call, WxH"),
    "preset": Setting(tuning.one_of(*sorted(PRESETS)), "preset (with --random-weights)"),
}


def _speech(path: Path | None, seconds: float, rate: int) -> np.ndarray:
    """16 kHz mono: the WAV given (looped to length), else procedural speech with pauses."""
    if path is None:
        return speech_take(SPEECH_SEED, seconds + 2, rate)
    if not path.is_file():
        raise EngineError(f"--audio {path}: no such file")
    with AudioFile(path) as audio:
        pieces = [samples for _, samples in audio.pieces()]
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if samples.size < rate // 10:
        raise EngineError(f"--audio {path}: under 0.1 s of audio")
    return np.resize(samples, round((seconds + 2) * rate)).astype(np.float32)


def _sweep(items: list[str]) -> list[dict[str, object]]:
    """`key=v1,v2` items -> every combination, each value parsed like --set."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise EngineError(f"--sweep {item!r}: expected key=value1,value2,...")
        axes.append([tuning.parse_settings([f"{key}={v}"], BENCH_SETTINGS) for v in values.split(",")])
    return [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*axes)] or [{}]


def _label(values: dict[str, object]) -> str:
    return "_".join(f"{k}-{v}" for k, v in values.items()) or "run"


def _run_engine(args: argparse.Namespace, values: dict[str, object], bar: tqdm) -> tuple[dict, dict]:
    from engine.streaming.engine import Engine  # noqa: PLC0415
    from ihuman.bench.engine_mode import run_engine  # noqa: PLC0415
    from ihuman.bench.machine import ProcessUsage  # noqa: PLC0415

    tuning.apply_process_settings(values)
    load = argparse.Namespace(**{**vars(args), "preset": values.get("preset", args.preset)})
    parts = loading.load_parts(load)
    engine = Engine(parts)
    speech = _speech(args.audio, args.seconds, parts.config.time.sample_rate)
    options = tuning.session_options(values)
    report = asyncio.run(run_engine(engine, speech, args.seconds, options, ProcessUsage(), bar_progress(bar)))
    return report, {
        "weights": parts.source,
        "preset": parts.config.name,
        "device": str(parts.device),
        "precision": str(parts.dtype).removeprefix("torch."),
        "compiled": parts.compiled,
    }


def _server_arguments(args: argparse.Namespace, values: dict[str, object]) -> list[str]:
    """`ihuman serve` options for the weights, video size and session settings of this run."""
    server = ["--device", args.device, "--precision", args.precision]
    if args.compile:
        server.append("--compile")
    server += ["--video-size", str(values.get("video", "1280x720"))]
    if args.random_weights:
        server += ["--random-weights", "--preset", str(values.get("preset", args.preset))]
    elif args.bundle:
        server += ["--bundle", str(args.bundle)]
    for key, value in values.items():
        if key in tuning.SETTINGS:
            server.append(f"--set={key}={'on' if value is True else 'off' if value is False else value}")
    if args.extra_delay_ms:
        server += ["--bench-extra-delay-ms", str(args.extra_delay_ms)]
    return server


def _call_settings(args: argparse.Namespace, values: dict[str, object]) -> dict[str, object]:
    return {
        "weights": "random" if args.random_weights else str(args.bundle or DEFAULT_BUNDLE),
        "preset": values.get("preset", args.preset),
        "device": str(loading.torch_device(args.device)),  # what the server makes of "auto" here
        "precision": args.precision,
        "compiled": args.compile,
    }


@contextlib.contextmanager
def _needs_bench_extra(what: str) -> Iterator[None]:
    """Imports of a mode that needs the `bench` extra (aiortc, Playwright): say what to install."""
    try:
        yield
    except ImportError as err:
        raise EngineError(
            f"{what} needs {err.name}, which this install lacks: pip install 'infinityhuman[bench]'"
        ) from None


def _run_webrtc(args: argparse.Namespace, values: dict[str, object], bar: tqdm) -> tuple[dict, dict]:
    with _needs_bench_extra("--mode webrtc"):
        from ihuman.bench.webrtc_mode import run_webrtc  # noqa: PLC0415
    speech = _speech(args.audio, args.seconds, 16_000)
    codec = str(values.get("codec", "h264"))
    server = _server_arguments(args, values)
    report = asyncio.run(run_webrtc(server, speech, args.seconds, codec, args.server, bar_progress(bar)))
    return report, {**_call_settings(args, values), "codec": codec}


def _run_browser(args: argparse.Namespace, values: dict[str, object], bar: tqdm) -> tuple[dict, dict]:
    with _needs_bench_extra("--mode browser"):
        from ihuman.bench.browser_mode import CHROMIUM, run_browser  # noqa: PLC0415
    if not Path(CHROMIUM).exists():
        raise EngineError(f"--mode browser drives Debian's Chromium ({CHROMIUM}): apt-get install chromium")
    if "codec" in values:
        raise EngineError(
            "--mode browser: the browser chooses the codec (H.264 first, as the server prefers)"
        )
    speech = _speech(args.audio, args.seconds, 16_000)
    report = asyncio.run(
        run_browser(_server_arguments(args, values), speech, args.seconds, bar_progress(bar))
    )
    return report, {**_call_settings(args, values), "browser": "chromium"}


def bar_progress(bar: tqdm) -> Callable[[float], None]:
    def update(fraction: float) -> None:
        step = round(fraction * bar.total, 1) - bar.n
        if step > 0:
            bar.update(step)  # tqdm itself limits how often it redraws

    return update


def cmd_latency(args: argparse.Namespace) -> int:
    from ihuman.bench import report as reports  # noqa: PLC0415
    from ihuman.bench.machine import machine  # noqa: PLC0415

    if args.seconds <= 0:
        raise EngineError("--seconds must be > 0")
    if args.server and args.mode != "webrtc":
        raise EngineError("--server goes with --mode webrtc")
    base = tuning.parse_settings(args.set, BENCH_SETTINGS)
    combos = [{**base, **combo} for combo in _sweep(args.sweep)]
    out = args.out or Path("bench-out") / time.strftime("%Y%m%d-%H%M%S")
    runner = {"engine": _run_engine, "webrtc": _run_webrtc, "browser": _run_browser}[args.mode]
    written = []
    for values in combos:
        for repeat in range(args.repeat):
            where = out
            if len(combos) > 1:
                where = where / _label(values)
            if args.repeat > 1:
                where = where / f"run{repeat + 1}"
            with tqdm(
                total=args.seconds,
                desc=f"{args.mode} {_label(values)}",
                unit="s",
                leave=False,
                mininterval=1.0,
            ) as bar:
                metrics, used = runner(args, values, bar)
            settings = {
                "mode": args.mode,
                **used,
                "seconds": args.seconds,
                "audio": str(args.audio or "procedural"),
                **values,
            }
            report = {
                "bench": "latency",
                "mode": args.mode,
                "machine": machine(used["device"]),
                "settings": settings,
                "metrics": metrics,
            }
            files = reports.write(report, where)
            written.append(where)
            print(reports.markdown(report, []).split("\n", 2)[2].strip(), flush=True)
            print(f"-> {files[1]}", flush=True)
    if len(written) > 1:
        from ihuman.bench.compare import compare_table  # noqa: PLC0415

        table = compare_table([w / "report.json" for w in written])
        (out / "sweep.md").write_text(table + "\n")
        print(table)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from engine.benchinfo import write_report  # noqa: PLC0415
    from ihuman.bench.render import run  # noqa: PLC0415

    parts = loading.load_parts(args)
    print(write_report(run(parts, args.seconds), args.out))
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    with _needs_bench_extra("ihuman bench soak"):
        from ihuman.bench import soak  # noqa: PLC0415
    from ihuman.bench.machine import machine  # noqa: PLC0415

    if args.minutes <= 0 or args.sample_s <= 0:
        raise EngineError("--minutes and --sample-s must be > 0")
    if args.talkers < 1 or args.viewers < 0:
        raise EngineError("--talkers must be >= 1 and --viewers >= 0")
    if args.ray_workers < 0:
        raise EngineError("--ray-workers must be >= 0")
    out = args.out or Path("bench-out") / time.strftime("soak-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    speech = _speech(args.audio, 30.0, 16_000)  # looped by each talker
    server = _server_arguments(args, {"video": "x".join(map(str, args.video_size))})
    if args.ray_workers:  # a fleet on a local Ray, its places shared out as evenly as they go
        per_worker = -(-args.talkers // args.ray_workers)
        server += ["--ray", "--workers", str(args.ray_workers), "--sessions-per-worker", str(per_worker)]
    with tqdm(total=args.minutes * 60, desc="soak", unit="s", mininterval=5.0) as bar:
        run = asyncio.run(
            soak.run_soak(
                server, speech, args.minutes, args.talkers, args.viewers, args.sample_s, bar_progress(bar)
            )
        )
    report = {
        "bench": "soak",
        "machine": machine(str(loading.torch_device(args.device))),
        "settings": {
            **_call_settings(args, {}),
            "video": "x".join(map(str, args.video_size)),
            "ray_workers": args.ray_workers,
        },
        "minutes": args.minutes,
        **run,
        "summary": soak.summarise(run["samples"], min(args.warm_up_s, args.minutes * 60 / 2)),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    soak.plot(report, out / "soak.png")
    (out / "report.md").write_text(soak.markdown(report))
    print(soak.markdown(report), flush=True)
    print(f"-> {out / 'report.md'}", flush=True)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ihuman.bench.compare import compare_table  # noqa: PLC0415

    for path in args.reports:
        if not path.is_file():
            raise EngineError(f"{path}: no such report")
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise EngineError(f"{path}: not a JSON report ({err})") from None
    print(compare_table(args.reports))
    return 0


def _weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help=f"trained bundle (default: {DEFAULT_BUNDLE})")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="with --random-weights")
    parser.add_argument(
        "--random-weights", action="store_true", help="untrained parts of --preset (speed only)"
    )
    loading.add_device_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)


def add(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure: live latency, offline render speed; compare reports")
    modes = bench.add_subparsers(dest="bench", required=True)
    latency = modes.add_parser("latency", help="a live session measured as a caller sees it")
    latency.add_argument(
        "--mode",
        choices=MODES,
        default="engine",
        help="engine: in process; webrtc: a real server and aiortc client; browser: and Chromium",
    )
    _weights(latency)
    latency.add_argument("--audio", type=Path, help="speech to send (default: procedural speech with pauses)")
    latency.add_argument("--seconds", type=float, default=30.0, help="how long to measure (default 30)")
    latency.add_argument("--out", type=Path, help="report folder (default: bench-out/<time>)")
    names = ", ".join(sorted(BENCH_SETTINGS))
    latency.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=f"a setting ({names})"
    )
    latency.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=V1,V2", help="run every combination"
    )
    latency.add_argument(
        "--repeat", type=arguments.positive, default=1, help="runs per setting (noise estimate)"
    )
    latency.add_argument("--server", help="webrtc: measure this running server (started with --bench-stamps)")
    latency.add_argument("--extra-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    latency.set_defaults(func=cmd_latency)
    render = modes.add_parser("render", help="offline render speed and memory")
    _weights(render)
    render.add_argument("--seconds", type=float, default=180.0, help="length of the speech (default 180)")
    render.add_argument("--out", type=Path, help="write the JSON report here too")
    render.set_defaults(func=cmd_render)
    soak = modes.add_parser("soak", help="talkers and viewers over real minutes: leaks and A/V drift")
    _weights(soak)
    soak.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    soak.add_argument("--talkers", type=int, default=2, help="talker sessions (default 2)")
    soak.add_argument("--viewers", type=int, default=2, help="viewers, spread over the sessions (default 2)")
    soak.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples (default 10)")
    soak.add_argument(
        "--warm-up-s", type=float, default=120.0, help="left out of the slopes (default 120, at most half)"
    )
    soak.add_argument(
        "--video-size",
        type=arguments.resolution,
        default=(1280, 720),
        help="the video the server sends, WxH (default 1280x720)",
    )
    soak.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        help="load a fleet instead: `ihuman serve --ray` with this many workers on a local Ray (default 0: "
        "one process)",
    )
    soak.add_argument("--audio", type=Path, help="speech the talkers send (default: procedural speech)")
    soak.add_argument("--out", type=Path, help="report folder (default: bench-out/soak-<time>)")
    soak.set_defaults(func=cmd_soak, extra_delay_ms=0.0)
    compare = modes.add_parser("compare", help="a table of differences between latency reports")
    compare.add_argument(
        "reports", nargs="+", type=Path, help="report.json files (the first is the baseline)"
    )
    compare.set_defaults(func=cmd_compare)
