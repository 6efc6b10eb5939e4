"""What the commands share: the parts to run (bundle, preset, device) and the picture checks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from engine.checkpoint import read_config
from engine.config import Config
from engine.exceptions import EngineError
from engine.parts import DEFAULT_BUNDLE, PRECISIONS, Parts
from engine.presets import get_preset

log = logging.getLogger("ihuman")


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("--device cuda: no CUDA device is available here")
    return torch.device(name)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --precision, for every command that runs the engine."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="the generators' weights and products: bf16 or fp32 (auto: bf16 on CUDA, fp32 on the CPU)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the generators' transformer blocks: fused kernels, far fewer launches "
        "(worth it on a GPU; the engine's warm-up builds them, a minute or two at start)",
    )


def load_parts(args: argparse.Namespace, *, allow_random_default: bool = False) -> Parts:
    """The parts `--bundle` / `--preset P --random-weights` / the embedded demo bundle name.

    allow_random_default: without a bundle and without the demo bundle, run the preset with
    random weights (with a warning) instead of stopping: the server still works end to end.
    """
    parts = _parts(args, allow_random_default).use_precision(args.precision)
    return parts.compile() if args.compile else parts


def _parts(args: argparse.Namespace, allow_random_default: bool) -> Parts:
    device = torch_device(args.device)
    bundle = _bundle(args, allow_random_default)
    if bundle is None:
        return Parts.random(get_preset(args.preset), args.seed, device)
    return Parts.from_bundle(bundle, device)


def load_config(args: argparse.Namespace) -> Config:
    """The Config of the parts `load_parts(args, allow_random_default=True)` loads, without their
    weights (a fleet's front frames pictures for workers that hold the weights)."""
    bundle = _bundle(args, allow_random_default=True)
    return get_preset(args.preset) if bundle is None else read_config(bundle)[0]


def _bundle(args: argparse.Namespace, allow_random_default: bool) -> Path | None:
    """The bundle the arguments name; None: random weights of --preset."""
    if args.random_weights:
        return None
    bundle = args.bundle or DEFAULT_BUNDLE
    if args.bundle is None and not (bundle / "config.json").is_file():
        if allow_random_default:
            log.warning("no demo bundle at %s: running preset %s with random weights", bundle, args.preset)
            return None
        raise EngineError(
            f"no --bundle given and no demo bundle at {bundle}; "
            "pass --bundle DIR, or --preset P --random-weights to measure speed"
        )
    return bundle


def face_check(args: argparse.Namespace, image: Path | None) -> bool:
    """Frame `image` by its face unless --no-face-check, or it is one of the bundle's own avatars:
    those are procedural characters framed as training frames them, where the photo detector
    rarely fires (media.framing)."""
    if args.no_face_check or image is None:
        return not args.no_face_check
    avatars = (args.bundle or DEFAULT_BUNDLE) / "avatars"
    return not (avatars.is_dir() and image.resolve().parent == avatars.resolve())
