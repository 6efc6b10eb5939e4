"""`ihuman eval` (the judges) and `ihuman export` (a bundle to ship)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from engine.checkpoint import load_bundle, read_config, save_bundle
from engine.config import Config
from engine.data.clip import make_clip
from engine.evaluation import (
    HELD_OUT,
    VALIDATION_FIRST,
    identity_drift,
    lip_sync,
    lip_sync_ceiling,
    plot_identity,
)
from engine.exceptions import ConfigError, EngineError
from engine.fidelity import judge, photo_judge
from engine.parts import DEFAULT_BUNDLE, REQUIRED, Parts
from ihuman import loading
from ihuman.arguments import count, positive

DEMO_AVATARS = 4  # pictures an exported bundle ships for the avatar picker
EXPORTED_EXTRAS = ("mouth_judge",)  # parts beyond the engine's that an export keeps (the lip-sync judge)


def cmd_eval(args: argparse.Namespace) -> int:
    parts = Parts.from_bundle(args.bundle, loading.torch_device(args.device))
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
        print(
            "r by lag (frames the mouth trails the truth): "
            + ", ".join(f"{lag:+d}: {r:.3f}" for lag, r in sync.by_lag.items())
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


# What changes how a bundle samples, not what its weights were trained to be: the settings an
# export may write (`--set`). Guidance scales, steps and schedules; how segments carry motion,
# keep the picture's detail, join latent frames and hear ahead.
SAMPLING_SETTINGS = {
    "flow": (
        "guidance_reference", "guidance_audio", "guidance_text",
        "lr_steps", "refiner_steps", "lr_time_shift", "refiner_time_shift",
    ),
    "segment": ("motion_feedback", "detail_tolerance", "smooth_joins", "audio_lead_frames"),
}  # fmt: skip


def _typed(key: str, text: str, current: object) -> object:
    """`text` as JSON, of the kind the setting holds now (a whole number, a number, true/false)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(current, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(current, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        kind, value = "a number", float(value) if ok else value
    if not ok:
        raise EngineError(f"--set {key}: expected {kind}, got {text!r}")
    return value


def with_settings(config: Config, items: list[str]) -> Config:
    """`section.field=value` set in `config`, for the sampling settings (SAMPLING_SETTINGS);
    EngineError for anything else or a value of the wrong kind."""
    document = config.to_dict()
    for item in items:
        key, sep, text = item.partition("=")
        section, _, name = key.partition(".")
        if not sep:
            raise EngineError(f"--set {item!r}: expected section.field=value, e.g. flow.guidance_audio=3")
        if name not in SAMPLING_SETTINGS.get(section, ()):
            known = ", ".join(f"{s}.{n}" for s, names in SAMPLING_SETTINGS.items() for n in names)
            raise EngineError(f"--set {key}: not a sampling setting; these are: {known}")
        document[section][name] = _typed(key, text, document[section][name])
    try:
        return Config.from_dict(document)
    except ConfigError as err:
        raise EngineError(f"--set: {err}") from None


def cmd_export(args: argparse.Namespace) -> int:
    """Copy a bundle's inference parts and its mouth judge (no optimizer state, logs or teachers),
    with the sampling settings of `--set` written into its config."""
    held = read_config(args.bundle)[1].get("parts", {})
    bundle = load_bundle(args.bundle, (*REQUIRED, *(p for p in EXPORTED_EXTRAS if p in held)))
    config = with_settings(bundle.config, args.set)
    evaluations = {p.stem: json.loads(p.read_text()) for p in sorted(args.bundle.glob("eval_*.json"))}
    save_bundle(args.out, config, bundle.parts, meta={**bundle.meta, "evaluations": evaluations})
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


def add(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="measure a bundle: lip sync, fidelity and smoothness, identity over a long take"
    )
    ev.add_argument("what", choices=("lipsync", "fidelity", "photos", "identity"))
    ev.add_argument("--photos", type=Path, nargs="+", help="photos: the real photos to speak")
    ev.add_argument("--no-face-check", action="store_true", help="photos: use them as they are")
    ev.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ev.add_argument("--characters", type=positive, default=4, help="lipsync, fidelity: held-out characters")
    ev.add_argument("--seconds", type=float, default=8.0, help="speech per character / length of the take")
    ev.add_argument("--out", type=Path, help="write the result as JSON")
    ev.add_argument("--plot", type=Path, help="identity: a PNG of the colour deviation over time")
    ev.add_argument(
        "--first-character",
        type=count,
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
    ex.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="a sampling setting written into the exported config (guidance, steps, motion "
        "feedback, detail, joins, audio lead), e.g. flow.guidance_audio=3",
    )
    ex.set_defaults(func=cmd_export)
