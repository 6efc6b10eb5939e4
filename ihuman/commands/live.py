"""`ihuman live`: a headless live session, from the local microphone or a recording played on the
real clock, to a virtual camera, network streams and recordings (transport.outputs).

The session is the server's (`Engine.open_session`): the same pacing, delay and fallbacks. Its
voice output is the input delayed to match the frames, and the outputs stamp both on the
session's timeline, so a stream carries picture and voice in sync. Ctrl-C ends it cleanly:
recordings are completed, streams closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from torch import Tensor

from engine.exceptions import EngineError
from engine.media.audio_file import AudioFile
from engine.media.framing import framer
from engine.media.image import read_image
from engine.parts import DEFAULT_BUNDLE
from engine.presets import PRESETS
from engine.streaming.engine import Engine
from engine.streaming.playback import play
from engine.streaming.session import Session, SessionOptions
from engine.streaming.stats import SessionStats
from ihuman import arguments, loading
from transport.heap import prepare_heap
from transport.outputs import FORMS, OutputError, SessionOutputs, StreamFormat, output_sink, runners

MAX_AUDIO_SECONDS = 3600.0  # a recording played live; longer is refused before any work
STATUS_EVERY_S = 1.0


def _read_audio(path: Path, rate: int) -> np.ndarray:
    with AudioFile(path) as audio:
        if audio.duration is not None and audio.duration > MAX_AUDIO_SECONDS:
            raise EngineError(f"{path}: {audio.duration:.0f} s is longer than {MAX_AUDIO_SECONDS:.0f} s")
        pieces = [samples for _, samples in audio.pieces()]
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if not samples.size:
        raise EngineError(f"{path}: no audio samples")
    return samples.astype(np.float32)


def _sounddevice():
    try:
        import sounddevice  # noqa: PLC0415 (optional: only the microphone needs PortAudio)
    except ImportError:
        raise EngineError("--mic needs sounddevice: pip install 'infinityhuman[live]'") from None
    except OSError as err:  # the package is there, the PortAudio library is not
        raise EngineError(f"--mic needs PortAudio ({err}): apt-get install libportaudio2") from None
    return sounddevice


def list_mics() -> int:
    sd = _sounddevice()
    inputs = [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    if not inputs:
        print("no audio input device found")
        return 1
    for index, device in inputs:
        channels, rate = device["max_input_channels"], device["default_samplerate"]
        print(f"{index:3d}  {device['name']}  ({channels} ch, {rate:.0f} Hz)")
    return 0


async def listen(session: Session, device: str | int | None) -> None:
    """Push the microphone's samples into the session as they come."""
    sd = _sounddevice()
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[np.ndarray] = asyncio.Queue()
    rate = session.timeline.rate

    def heard(indata: np.ndarray, frames: int, when: object, status: object) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, indata[:, 0].copy())

    try:
        stream = sd.InputStream(
            device=device, channels=1, samplerate=rate, blocksize=rate // 50, dtype="float32", callback=heard
        )
    except (sd.PortAudioError, ValueError) as err:
        raise EngineError(
            f"cannot open the microphone {device or '(default)'}: {err}; --list-mics shows them"
        ) from None
    # A microphone delivers every sample: its pieces go one after another, so those that come
    # late in a burst (the event loop was busy) keep their place instead of moving the voice later.
    producer = session.producer_clock()
    with stream:
        while True:
            session.push_live_audio(await pieces.get(), producer)


def status_line(seconds: float, stats: SessionStats, outputs: list[dict[str, object]]) -> str:
    latency = stats.added_latency_ms
    lat = f"latency p50 {latency['p50']:.0f} ms" if latency else "latency -"
    fallbacks = sum(stats.fallbacks.values())
    parts = [f"{seconds:6.1f} s", f"{stats.fps_out:4.1f} fps", lat, f"fallbacks {fallbacks}"]
    for o in outputs:
        dropped = sum(o["dropped"].values())  # type: ignore[union-attr]
        parts.append(f"{o['url']} {o['state']} (dropped {dropped})")
    return " | ".join(parts)


async def run_live(
    engine: Engine,
    picture: Tensor,
    outputs: SessionOutputs,
    *,
    voice: Callable[[Session], Awaitable[None]],
    seconds: float | None,
    options: SessionOptions,
    report: Callable[[str], None],
) -> dict[str, object]:
    """One session fed by `voice(session)` until `seconds` of it have been shown (None: until
    Ctrl-C or cancellation), with a status line every second."""
    session = await engine.open_session(picture, options=options)
    until = None if seconds is None else session.t0 + session.delay + seconds

    async def watch() -> None:
        raise EngineError(f"the session stopped: {await session.failed()}")

    tasks = [
        asyncio.create_task(voice(session)),
        asyncio.create_task(outputs.run(session, until)),
        asyncio.create_task(watch()),
    ]
    started = time.monotonic()
    try:
        while not tasks[1].done():
            await asyncio.wait(tasks, timeout=STATUS_EVERY_S, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            report(status_line(time.monotonic() - started, session.snapshot(), outputs.stats()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        frames = session.snapshot().frames_out
        await engine.close_session(session)
    return {"seconds": time.monotonic() - started, "frames": frames}


def _check(args: argparse.Namespace) -> None:
    """Every request checked before the model loads."""
    if args.image is None:
        raise EngineError("give the picture to animate: --image FILE")
    if not args.output:
        raise EngineError(f"give at least one --output: {', '.join(FORMS)}")
    if (args.audio is None) == (args.mic is None):
        raise EngineError("give the voice: --audio FILE (played on the real clock) or --mic [DEVICE]")
    if args.audio is not None and not args.audio.is_file():
        raise EngineError(f"{args.audio}: no such file")
    try:
        for url in args.output:
            output_sink(url, StreamFormat(*args.video_size))
    except OutputError as err:
        raise EngineError(str(err)) from None
    if args.mic is not None:
        _sounddevice()  # a missing package or PortAudio


def cmd_live(args: argparse.Namespace) -> int:
    if args.list_mics:
        return list_mics()
    _check(args)
    prepare_heap()  # a live session may run for hours; before its threads allocate (transport.heap)
    width, height = args.video_size
    parts = loading.load_parts(args, allow_random_default=True)
    cfg = parts.config
    fmt = StreamFormat(width, height, cfg.time.fps, cfg.time.sample_rate)
    picture = framer(cfg, loading.face_check(args, args.image), str(args.image))(read_image(args.image))
    engine = Engine(parts)
    seconds: float | None = None
    if args.audio is not None:
        audio = _read_audio(args.audio, cfg.time.sample_rate)
        seconds = len(audio) / cfg.time.sample_rate

        def voice(session: Session) -> Awaitable[None]:
            return play(session, engine.clock, audio)
    else:
        device = None if args.mic == "" else int(args.mic) if args.mic.isdigit() else args.mic

        def voice(session: Session) -> Awaitable[None]:
            return listen(session, device)

    outputs = SessionOutputs(runners(args.output, fmt), fmt, stamps=args.bench_stamps)
    options = SessionOptions(target_delay_ms=args.delay_ms)

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result: dict[str, object] = {}
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a live session ends
            result = asyncio.run(
                run_live(
                    engine, picture, outputs, voice=voice, seconds=seconds, options=options, report=report
                )
            )
    finally:
        late = outputs.stop()
    for o in outputs.stats():
        counts = f"sent {o['sent']}, dropped {o['dropped']}, reconnects {o['reconnects']}"
        print(f"{o['url']}: {o['state']}, {counts}")
    if late:
        print(f"did not finish in time: {', '.join(late)}", file=sys.stderr)
    failed = [o for o in outputs.stats() if o["state"] == "failed"]
    if result:
        print(f"live: {result['frames']} frames in {result['seconds']:.1f} s")
    return 1 if failed or late else 0


def add(sub: argparse._SubParsersAction) -> None:
    live = sub.add_parser(
        "live", help="a live session from the microphone or a file, to a virtual camera, streams or files"
    )
    live.add_argument("--image", type=Path, help="reference picture (framed by its face)")
    voice = live.add_mutually_exclusive_group()
    voice.add_argument("--audio", type=Path, help="speech file, played on the real clock")
    voice.add_argument(
        "--mic",
        nargs="?",
        const="",
        help="the microphone (default device, or its number or name; --list-mics)",
    )
    live.add_argument("--list-mics", action="store_true", help="list the audio input devices and exit")
    live.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="URL",
        help="where it goes (repeatable): " + ", ".join(FORMS),
    )
    live.add_argument(
        "--video-size",
        type=arguments.resolution,
        default=(1280, 720),
        help="WxH of every output (default 1280x720)",
    )
    live.add_argument("--bundle", type=Path, help=f"trained bundle (default: {DEFAULT_BUNDLE})")
    live.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="random weights of a preset")
    live.add_argument(
        "--random-weights", action="store_true", help="untrained parts of --preset (speed only)"
    )
    live.add_argument(
        "--no-face-check", action="store_true", help="use --image as it is, not framed by its face"
    )
    live.add_argument("--delay-ms", type=float, help="target delay (default: from the measured compute)")
    loading.add_device_arguments(live)
    live.add_argument("--bench-stamps", action="store_true", help=argparse.SUPPRESS)
    live.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    live.set_defaults(func=cmd_live)
