"""`ihuman` entry point. argparse lives here only; every subcommand calls library code."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from engine.checkpoint import load_bundle, read_config, save_bundle
from engine.config import PRESETS, Config, get_preset
from engine.data.clip import make_clip
from engine.data.make import make_dataset
from engine.evaluation import (
    HELD_OUT,
    VALIDATION_FIRST,
    identity_drift,
    lip_sync,
    lip_sync_ceiling,
    plot_identity,
)
from engine.exceptions import EngineError
from engine.fidelity import judge, photo_judge
from engine.generation.stages import GenerationChoices
from engine.media.framing import framer
from engine.media.image import read_image
from engine.media.mp4 import AUDIO_CODECS
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.models.vae import decoder_flops_per_frame
from engine.parts import DEFAULT_BUNDLE, REQUIRED, Parts
from engine.render import RenderOptions, render
from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions
from engine.training.registry import TASKS, build_task
from engine.training.trainer import Trainer, TrainSettings, to_device
from engine.training.windows import batches, held_out

log = logging.getLogger("ihuman")
DEFAULT_AVATAR_SEED = 1_000_003  # a held-out procedural character
DEMO_AVATARS = 4  # pictures an exported bundle ships for the avatar picker
EXPORTED_EXTRAS = ("mouth_judge",)  # parts beyond the engine's that an export keeps (the lip-sync judge)


def _parameter_counts(config: Config) -> dict[str, int]:
    """Parameters of each generator, built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        models = {"lr_a2v": LRA2V(config), "refiner": PGRefiner(config)}
    return {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}


def _info(config: Config) -> dict[str, object]:
    tb = config.time
    return {
        "preset": config.name,
        "lr_resolution": str(config.lr),
        "hr_resolution": str(config.hr),
        "latent_channels": config.latent_channels,
        "lr_latent_grid": list(config.lr_latent_grid),
        "hr_latent_grid": list(config.hr_latent_grid),
        "lr_tokens_per_latent_frame": config.lr_tokens_per_latent,
        "hr_tokens_per_latent_frame": config.hr_tokens_per_latent,
        "lr_segment_tokens": config.lr_segment_tokens,
        "hr_segment_tokens": config.hr_segment_tokens,
        "segment_ms": config.segment_video_frames * tb.frame_ms,
        "audio_samples_per_frame": tb.samples_per_frame,
        "audio_tokens_per_latent_frame": config.audio_tokens_per_latent,
        "lr_steps": config.flow.lr_steps,
        "refiner_steps": config.flow.refiner_steps,
        "decoder_gflop_per_hr_frame": round(
            decoder_flops_per_frame(config, config.hr.width, config.hr.height) / 1e9, 2
        ),
        "parameters": _parameter_counts(config),
    }


def _print_info(info: dict[str, object]) -> None:
    params = info.pop("parameters")
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    assert isinstance(params, dict)
    for name, count in params.items():
        print(f"{'parameters.' + name:<{width}}  {count:,} ({count / 1e9:.3f} B)")


def cmd_info(args: argparse.Namespace) -> int:
    info = _info(get_preset(args.preset))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def _resolution(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text}")
    return value


def _decay(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1, got {text}")
    return value


def _minutes(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected minutes >= 0, got {text}")
    return value


def cmd_data_make(args: argparse.Namespace) -> int:
    width, height = args.res
    seeds = range(args.seed, args.seed + args.clips)
    with tqdm(total=args.clips, unit="clip", desc="clips") as bar:
        done = sum(1 for s in seeds if (args.out / f"clip_{s:06d}" / "meta.json").is_file())
        bar.update(done)
        report = make_dataset(
            args.out, seeds, args.seconds, width, height, args.workers, on_clip=lambda _: bar.update(1)
        )
    frames = report.made * round(args.seconds * 25)
    rate = frames / report.seconds if report.seconds > 0 else 0.0
    print(
        f"made {report.made} clips ({report.skipped} already there) in {report.seconds:.1f} s "
        f"= {rate:.1f} frames/s at {width}x{height} with {args.workers} workers -> {args.out}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    out = args.out
    if (out / "config.json").is_file():
        config, _ = read_config(out)  # continue the bundle with its own config
    else:
        config = get_preset(args.preset)
    width, height = args.res if args.res else (None, None)
    device = _device(args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    task = build_task(
        args.task, config, width, height, crop=args.crop, bundle=out, half_scale=args.half_scale
    ).to(device)
    settings = TrainSettings(
        steps=args.steps,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        bf16=bf16,
        time_limit_s=None if args.time_limit is None else args.time_limit * 60,
        average=args.average,
    )
    trainer = Trainer(task.name, task.part, task.model, config, out, settings, extra_parts=task.extra)
    if trainer.resume():
        print(f"resuming {task.name} at step {trainer.step} from {out}")
    elif trainer.fine_tuning:
        print(f"fine-tuning the {task.part} weights {out} holds (a new optimizer, from step 0)")
    print(f"training {task.name} on {device} in {'bfloat16 autocast' if bf16 else 'float32'}")
    stream = batches(
        task,
        args.batch,
        seed=args.seed + trainer.step,
        seconds=args.seconds,
        workers=args.workers,
        data=args.data,
        pin_memory=device.type == "cuda",
    )
    with tqdm(total=args.steps, initial=trainer.step, unit="step", desc=task.name) as bar:

        def progress(step: int, row: dict) -> None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "seconds")})

        finished = trainer.run(stream, task.loss, on_step=progress)
    if not finished:
        print(f"{task.name}: --time-limit reached at step {trainer.step}; the same command resumes")
    if args.eval_clips == 0:
        print(f"{task.name}: step {trainer.step} -> {out} (no held-out evaluation: --eval-clips 0)")
        return 0
    evaluation = [to_device(b, device) for b in held_out(task, args.eval_clips, args.seconds, args.batch)]
    with trainer.averaged():  # the weights the bundle stores
        metrics = task.evaluate(evaluation)
    (out / f"eval_{task.name}.json").write_text(json.dumps({"step": trainer.step, **metrics}, indent=2))
    print(
        f"{task.name}: step {trainer.step}, "
        + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        + f" -> {out}"
    )
    return 0


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("--device cuda: no CUDA device is available here")
    return torch.device(name)


def _load_parts(args: argparse.Namespace, *, allow_random_default: bool = False) -> Parts:
    """The parts `--bundle` / `--preset P --random-weights` / the embedded demo bundle name.

    allow_random_default: without a bundle and without the demo bundle, run the preset with
    random weights (with a warning) instead of stopping: the server still works end to end.
    """
    device = _device(args.device)
    if args.random_weights:
        return Parts.random(get_preset(args.preset), args.seed, device)
    bundle = args.bundle or DEFAULT_BUNDLE
    if args.bundle is None and not (bundle / "config.json").is_file():
        if allow_random_default:
            log.warning("no demo bundle at %s: running preset %s with random weights", bundle, args.preset)
            return Parts.random(get_preset(args.preset), args.seed, device)
        raise EngineError(
            f"no --bundle given and no demo bundle at {bundle}; "
            "pass --bundle DIR, or --preset P --random-weights to measure speed"
        )
    return Parts.from_bundle(bundle, device)


def _face_check(args: argparse.Namespace, image: Path | None) -> bool:
    """Frame `image` by its face unless --no-face-check, or it is one of the bundle's own avatars:
    those are procedural characters framed as training frames them, where the photo detector
    rarely fires (media.framing)."""
    if args.no_face_check or image is None:
        return not args.no_face_check
    avatars = (args.bundle or DEFAULT_BUNDLE) / "avatars"
    return not (avatars.is_dir() and image.resolve().parent == avatars.resolve())


def cmd_render(args: argparse.Namespace) -> int:
    parts = _load_parts(args)
    options = RenderOptions(
        generation=GenerationChoices(lr_steps=args.steps, seed=args.seed, text=args.text),
        size=args.size,
        audio_codec=args.audio_codec,
        face_check=_face_check(args, args.image),
    )
    with tqdm(unit="frame", desc="render") as bar:

        def progress(frames: int, total: int | None) -> None:
            bar.total = max(total or 0, frames)
            bar.update(frames - bar.n)

        report = render(parts, args.image, args.audio, args.out, options, on_progress=progress)
    print(
        f"{report.out}: {report.frames} frames ({report.audio_seconds:.2f} s of audio) in "
        f"{report.wall_seconds:.1f} s, real-time factor {report.realtime_factor:.2f} "
        f"({1 / report.realtime_factor:.2f}x real time); peak RSS {report.peak_rss_mb:.0f} MB"
    )
    return 0


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
    except ImportError as err:
        raise EngineError(
            f"ihuman serve needs the WebRTC stack ({err.name} is missing): pip install 'infinityhuman[serve]'"
        ) from None

    parts = _load_parts(args, allow_random_default=True)
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        token=args.token,
        max_sessions=args.max_sessions,
        ice_servers=tuple(args.ice_server),
        session_options=SessionOptions(target_delay_ms=args.delay_ms),
        face_check=not args.no_face_check,
    )
    avatars = (args.bundle or DEFAULT_BUNDLE) / "avatars"
    settings = dataclasses.replace(settings, avatar_dir=avatars)
    default = _default_avatar(parts, args.avatar, _face_check(args, args.avatar))
    prepare_webrtc(settings)
    server = Server(Engine(parts), settings, default, explicit_avatar=args.avatar is not None)

    def ready(url: str) -> None:
        print(f"InfinityHuman Live: open {url} (Ctrl-C stops)", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a server is stopped
            uvloop.run(serve(server, on_ready=ready))
    except OSError as err:  # the port is taken, the address is not ours, ...
        raise EngineError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="procedural talking-avatar data").add_subparsers(
        dest="data", required=True
    )
    make = data.add_parser("make", help="write N procedural clips (resumes an interrupted run)")
    make.add_argument("--out", type=Path, required=True, help="output folder")
    make.add_argument("--clips", type=int, default=100, help="number of clips (default 100)")
    make.add_argument("--seconds", type=float, default=4.0, help="seconds per clip (default 4)")
    make.add_argument("--res", type=_resolution, default=(640, 352), help="WIDTHxHEIGHT (default 640x352)")
    make.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="processes")
    make.add_argument("--seed", type=int, default=0, help="first seed; clip i has seed SEED + i")
    make.set_defaults(func=cmd_data_make)


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a part on procedural (or stored) data into a bundle")
    train.add_argument("task", choices=TASKS)
    train.add_argument("--out", type=Path, required=True, help="bundle folder (created, or resumed)")
    train.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="preset of a new bundle")
    train.add_argument(
        "--steps",
        type=_count,
        default=1000,
        help="total steps (a resumed run continues to this; 0 stores the part untrained)",
    )
    train.add_argument("--batch", type=int, default=4)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--res", type=_resolution, help="frame size (default: HR for vae, LR otherwise)")
    train.add_argument("--crop", type=int, help="vae: train on random crops of this many pixels")
    train.add_argument("--half-scale", type=float, default=0.0, help="vae: share of batches at half size")
    train.add_argument(
        "--data", type=Path, help="clips from `ihuman data make` (default: generate on the fly)"
    )
    train.add_argument("--seconds", type=float, default=4.0, help="length of on-the-fly clips")
    train.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=200)
    train.add_argument(
        "--eval-clips", type=_count, default=4, help="held-out characters to evaluate on (0: none)"
    )
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    train.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="bf16: bfloat16 autocast, float32 weights (auto: bf16 on CUDA, fp32 on the CPU)",
    )
    train.add_argument(
        "--average",
        type=_decay,
        help="store the moving average of the weights with this decay (e.g. 0.999; default: the raw weights)",
    )
    train.add_argument(
        "--time-limit", type=_minutes, help="minutes: stop with a checkpoint after this (resume later)"
    )
    train.set_defaults(func=cmd_train)


def _add_render(sub: argparse._SubParsersAction) -> None:
    ren = sub.add_parser("render", help="render a talking video from a reference image and an audio file")
    ren.add_argument("--image", type=Path, required=True, help="reference picture (PNG, JPEG, WebP, ...)")
    ren.add_argument("--audio", type=Path, required=True, help="speech (WAV, FLAC, MP3, Ogg, M4A, ...)")
    ren.add_argument("--out", type=Path, required=True, help="output MP4 (H.264 + the original audio)")
    ren.add_argument("--text", help="optional prompt")
    ren.add_argument("--bundle", type=Path, help=f"trained bundle (default: {DEFAULT_BUNDLE})")
    ren.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="with --random-weights")
    ren.add_argument("--random-weights", action="store_true", help="untrained parts of --preset (speed only)")
    ren.add_argument("--steps", type=_positive, help="LR-A2V flow steps per segment (default: the config's)")
    ren.add_argument("--seed", type=int, default=0, help="noise seed (same inputs + seed = same video)")
    ren.add_argument(
        "--no-face-check",
        action="store_true",
        help="use the picture as it is (scaled to cover the frame) instead of framing it by its face",
    )
    ren.add_argument("--size", type=_resolution, help="output WIDTHxHEIGHT (default: the preset's HR size)")
    ren.add_argument(
        "--audio-codec", default="aac", choices=AUDIO_CODECS, help="flac/alac keep audio bit-exact"
    )
    ren.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    ren.set_defaults(func=cmd_render)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="the WebRTC server: browser client, viewers for OBS")
    srv.add_argument("--host", default="127.0.0.1", help="listen address (beyond loopback needs --token)")
    srv.add_argument("--port", type=int, default=8080)
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
    srv.add_argument("--max-sessions", type=int, default=2, help="concurrent avatar sessions")
    srv.add_argument("--ice-server", action="append", default=[], help="stun:/turn:user:pass@host URL")
    srv.add_argument("--delay-ms", type=float, help="target delay (default: from the measured compute)")
    srv.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    srv.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    srv.set_defaults(func=cmd_serve)


def cmd_eval(args: argparse.Namespace) -> int:
    parts = Parts.from_bundle(args.bundle, _device(args.device))
    if args.what == "lipsync":
        span = {"characters": args.characters, "seconds": args.seconds, "first": args.first_character}
        reader = _lip_reader(args, parts)
        span["reader"] = reader
        sync = lip_sync(parts, **span)
        result: dict = {**dataclasses.asdict(sync), "reader": args.reader}
        print(
            f"lip sync on {args.characters} held-out characters, read by the {args.reader}: "
            f"r = {sync.correlation:.3f} at a lag of {sync.lag_frames} frames "
            f"(r = {sync.correlation_at_zero:.3f} at 0), {sync.frames} frames"
        )
        if args.ceiling:
            ceiling = lip_sync_ceiling(parts, **span)
            result["ceiling"] = {name: dataclasses.asdict(c) for name, c in ceiling.items()}
            print(
                f"the same characters rendered speaking it: r = {ceiling['rendered'].correlation:.3f}; "
                f"after the autoencoder: r = {ceiling['reconstructed'].correlation:.3f}"
            )
    elif args.what == "photos":
        if not args.photos:
            raise EngineError("eval photos: name the photos to judge with --photos FILE [FILE ...]")
        result = photo_judge(parts, args.photos, args.seconds, face_check=not args.no_face_check)
        for name, row in result["photos"].items():
            print(
                f"{name}: face found in {100 * row['face_found']:.0f} % of frames, SSIM outside the "
                f"mouth {row['ssim_outside_mouth']:.3f}, "
                f"mouth motion speech/silence {row['speech_over_silence']:.2f}"
            )
    elif args.what == "fidelity":
        result = judge(parts, args.characters, args.seconds, args.first_character)
        _print_fidelity(result)
    else:
        result = identity_drift(parts, seconds=args.seconds)
        worst = ", ".join(f"{k} {v:.3f}" for k, v in result["max_deviation"].items())
        print(f"identity over {args.seconds:.0f} s: largest colour deviation from the first 10 s: {worst}")
        if args.plot:
            plot_identity(result, str(args.plot))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


def _lip_reader(
    args: argparse.Namespace, parts: Parts
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """--reader judge: the mouth judge of --judge (default: the bundle's); pose: the pose head's."""
    if args.reader == "pose":
        return parts.pose.mouth_opening
    source = args.judge or args.bundle
    if "mouth_judge" not in read_config(source)[1].get("parts", {}):
        raise EngineError(
            f"{source} has no mouth judge: train one (ihuman train mouth-judge --out DIR) and pass "
            "--judge DIR, or read with the pose head's reader: --reader pose"
        )
    judge = load_bundle(source, ("mouth_judge",), parts.device).parts["mouth_judge"].eval()
    return judge.read


def _print_fidelity(result: dict) -> None:
    print(f"fidelity on {result['characters']} held-out characters x {result['seconds']:.0f} s:")
    for res in ("lr", "hr"):
        for who in ("generated", "still"):
            f = result[f"{who}_{res}"]
            print(
                f"  {res} {who:<9} PSNR {f['psnr_db']:.2f} dB, SSIM {f['ssim']:.3f}, "
                f"mouth L1 {f['mouth_l1']:.4f} (PSNR {f['mouth_psnr_db']:.2f} dB)"
            )
        gain = result[f"gain_{res}"]
        print(
            f"  {res} over the still reference: {gain['psnr_db']:+.2f} dB, "
            f"mouth error {100 * gain['mouth_error_reduction']:+.1f} % lower"
        )
    for name, sm in result["smoothness"].items():
        print(
            f"  frame change at latent boundaries / inside, {name}: {sm['boundary_change']:.4f} / "
            f"{sm['inner_change']:.4f} = {sm['ratio']:.2f}"
        )


def cmd_export(args: argparse.Namespace) -> int:
    """Copy a bundle's inference parts and its mouth judge (no optimizer state, logs or teachers)."""
    held = read_config(args.bundle)[1].get("parts", {})
    bundle = load_bundle(args.bundle, (*REQUIRED, *(p for p in EXPORTED_EXTRAS if p in held)))
    evaluations = {p.stem: json.loads(p.read_text()) for p in sorted(args.bundle.glob("eval_*.json"))}
    save_bundle(args.out, bundle.config, bundle.parts, meta={**bundle.meta, "evaluations": evaluations})
    # Reference pictures of held-out characters for the page's avatar picker.
    avatars = args.out / "avatars"
    avatars.mkdir(exist_ok=True)
    hr = bundle.config.hr
    for i in range(DEMO_AVATARS):
        frame = make_clip(HELD_OUT + 900 + i, 0.04, 2 * hr.width, 2 * hr.height).frames[0]
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(avatars / f"demo-{i + 1}.png")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"exported {', '.join(bundle.parts)} to {args.out} ({size / 1e6:.1f} MB)")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="measure a bundle: lip sync, fidelity and smoothness, identity over a long take"
    )
    ev.add_argument("what", choices=("lipsync", "fidelity", "photos", "identity"))
    ev.add_argument("--photos", type=Path, nargs="+", help="photos: the real photos to speak")
    ev.add_argument("--no-face-check", action="store_true", help="photos: use them as they are")
    ev.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ev.add_argument("--characters", type=_positive, default=4, help="lipsync, fidelity: held-out characters")
    ev.add_argument("--seconds", type=float, default=8.0, help="speech per character / length of the take")
    ev.add_argument("--out", type=Path, help="write the result as JSON")
    ev.add_argument("--plot", type=Path, help="identity: a PNG of the colour deviation over time")
    ev.add_argument(
        "--first-character",
        type=_count,
        default=0,
        help=f"lipsync, fidelity: first held-out character (tune on {VALIDATION_FIRST} on, report from 0)",
    )
    ev.add_argument(
        "--reader",
        default="judge",
        choices=("judge", "pose"),
        help="lipsync: the mouth judge no loss reads (default), or the pose head's reader",
    )
    ev.add_argument(
        "--judge", type=Path, help="lipsync: a bundle holding the mouth judge (default: --bundle)"
    )
    ev.add_argument(
        "--ceiling",
        action="store_true",
        help="lipsync: also read the characters rendered speaking, as rendered and through the autoencoder",
    )
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=cmd_eval)
    ex = sub.add_parser("export", help="copy a trained bundle's inference parts (e.g. into engine/assets)")
    ex.add_argument("--bundle", type=Path, required=True)
    ex.add_argument("--out", type=Path, required=True)
    ex.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ihuman", description="InfinityHuman Live: real-time avatar engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a preset's sizes and parameter counts")
    info.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="preset (default: tiny)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    for add in (_add_data, _add_train, _add_render, _add_serve, _add_eval):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except EngineError as err:
        print(f"ihuman: error: {err}", file=sys.stderr)
        return 2
