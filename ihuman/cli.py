"""The `ihuman` command: the top-level parser and `ihuman info`; every other subcommand's parser and
code are in ihuman/commands/, and each calls library code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import torch

from engine.config import Config
from engine.exceptions import EngineError
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.models.vae import decoder_flops_per_frame
from engine.perf import segment_costs, segment_floor_ms
from engine.presets import PRESETS, get_preset
from ihuman.commands import bench, evaluate, live, render, serve, training

log = logging.getLogger("ihuman")


def _parameter_counts(config: Config) -> dict[str, int]:
    """Parameters of each generator, built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        models = {"lr_a2v": LRA2V(config), "refiner": PGRefiner(config)}
    return {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}


def _segment_costs(config: Config, tflops: float) -> dict[str, object]:
    """FLOPs and weight bytes per segment, stage by stage, and the floor they imply at `tflops`."""
    costs = segment_costs(config)
    out: dict[str, object] = {}
    for c in costs:
        weights = f"{c.weight_bytes / 1e9:.3f} GB weights read"
        out[f"segment.{c.name}"] = f"{c.flop / 1e12:.3f} TFLOP, {weights}, {c.calls} call(s)"
    budget_ms = config.segment_video_frames * config.time.frame_ms
    for stage in ("low_res", "refine"):
        out[f"floor_ms_at_{tflops:g}_tflops.{stage}"] = round(segment_floor_ms(costs, tflops, stage), 1)
    out[f"floor_ms_at_{tflops:g}_tflops.segment"] = round(segment_floor_ms(costs, tflops), 1)
    out["segment_budget_ms"] = budget_ms  # one segment's video: what a stage may take for real time
    return out


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
    config = get_preset(args.preset)
    info = _info(config)
    if args.costs:
        parameters = info.pop("parameters")
        info.update(_segment_costs(config, args.tflops), parameters=parameters)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ihuman", description="InfinityHuman Live: real-time avatar engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a preset's sizes and parameter counts")
    info.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="preset (default: tiny)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument(
        "--costs", action="store_true", help="FLOPs and weight bytes per segment and stage (counted on meta)"
    )
    info.add_argument(
        "--tflops", type=float, default=990.0, help="throughput for the floor (default: H100 dense bf16, 990)"
    )
    info.set_defaults(func=cmd_info)

    for add in (
        training.add_data,
        training.add_train,
        render.add,
        serve.add,
        live.add,
        evaluate.add,
        bench.add,
    ):
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
