"""`ihuman render`: a video from a picture and a sound file."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from engine.generation.stages import GenerationChoices
from engine.media.mp4 import AUDIO_CODECS, MP4_SUFFIXES
from engine.media.paths import check_output
from engine.parts import DEFAULT_BUNDLE
from engine.presets import PRESETS
from engine.render import RenderOptions, render
from ihuman import loading
from ihuman.arguments import positive, resolution


def cmd_render(args: argparse.Namespace) -> int:
    check_output(args.out, MP4_SUFFIXES)  # before the model loads and the work starts
    parts = loading.load_parts(args)
    options = RenderOptions(
        generation=GenerationChoices(lr_steps=args.steps, seed=args.seed, text=args.text),
        size=args.size,
        audio_codec=args.audio_codec,
        face_check=loading.face_check(args, args.image),
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


def add(sub: argparse._SubParsersAction) -> None:
    ren = sub.add_parser("render", help="render a talking video from a reference image and an audio file")
    ren.add_argument("--image", type=Path, required=True, help="reference picture (PNG, JPEG, WebP, ...)")
    ren.add_argument("--audio", type=Path, required=True, help="speech (WAV, FLAC, MP3, Ogg, M4A, ...)")
    ren.add_argument("--out", type=Path, required=True, help="output MP4 (H.264 + the original audio)")
    ren.add_argument("--text", help="optional prompt")
    ren.add_argument("--bundle", type=Path, help=f"trained bundle (default: {DEFAULT_BUNDLE})")
    ren.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="with --random-weights")
    ren.add_argument("--random-weights", action="store_true", help="untrained parts of --preset (speed only)")
    ren.add_argument("--steps", type=positive, help="LR-A2V flow steps per segment (default: the config's)")
    ren.add_argument("--seed", type=int, default=0, help="noise seed (same inputs + seed = same video)")
    ren.add_argument(
        "--no-face-check",
        action="store_true",
        help="use the picture as it is (scaled to cover the frame) instead of framing it by its face",
    )
    ren.add_argument("--size", type=resolution, help="output WIDTHxHEIGHT (default: the preset's HR size)")
    ren.add_argument(
        "--audio-codec", default="aac", choices=AUDIO_CODECS, help="flac/alac keep audio bit-exact"
    )
    loading.add_device_arguments(ren)
    ren.set_defaults(func=cmd_render)
