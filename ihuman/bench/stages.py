"""One segment's pieces timed on their own, outside a session: `python -m ihuman.bench.stages`.

For `--segments` segments of a preset with random weights it times LR-A2V's sampling, the LR
decode with the pose head, and the refiner with the HR decode, each by the wall clock and by
CUDA events on the stream it ran on, and divides the FLOPs counted for it (engine/perf.py) by its
GPU time: the TFLOP/s each piece reaches. Wall time well above GPU time means the host (Python,
kernel launches) sets the pace, not the GPU. `--profile FILE` adds torch.profiler's table of the
kernels of one more segment. The first segment pays one-time costs (kernel builds, attention
tuning) and is reported apart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.benchinfo import environment, write_report
from engine.data.clip import make_clip
from engine.generation.segments import segment
from engine.generation.stages import (
    GenerationChoices,
    GenerationSettings,
    LowResStage,
    Reference,
    RefineStage,
)
from engine.parts import PRECISIONS, Parts
from engine.perf import segment_costs
from engine.presets import PRESETS, get_preset

PIECES = {  # piece -> the counted costs (engine/perf.py) it runs
    "lr_a2v": ("LR-A2V",),
    "lr_decode_pose": ("LR decode", "pose head"),
    "refine_decode": ("PG-Refiner", "HR decode"),
}


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float, float | None]:
    """fn's result, its wall milliseconds and its GPU milliseconds (None on a CPU)."""
    if device.type != "cuda":
        t = time.perf_counter()
        result = fn()
        return result, (time.perf_counter() - t) * 1000, None
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = time.perf_counter()
    start.record()
    result = fn()
    end.record()
    end.synchronize()
    return result, (time.perf_counter() - t) * 1000, start.elapsed_time(end)


def run(parts: Parts, segments: int, lr_steps: int | None, profile: Path | None) -> dict:
    cfg, device = parts.config, parts.device
    image = make_clip(11, 1 / cfg.time.fps, cfg.hr.width, cfg.hr.height).frames[0]
    reference = Reference.encode(parts, image)
    settings = GenerationSettings.from_config(cfg, GenerationChoices(lr_steps=lr_steps))
    low, refine = LowResStage(parts, reference, settings), RefineStage(parts, reference, settings)
    s = cfg.segment
    frames = s.motion_latents + s.new_latents
    audio = torch.zeros(1, frames, cfg.audio_tokens_per_latent, cfg.audio.feature_dim, device=device)
    rows: list[dict[str, tuple[float, float | None]]] = []

    def one(index: int) -> dict[str, tuple[float, float | None]]:
        seg = segment(index, cfg)
        windows = audio[:, : seg.latent_frames]
        latents, *lr = _timed(lambda: low.generate(seg, windows), device)
        decoded, *dec = _timed(lambda: low.decode(latents), device)
        _, *ref = _timed(lambda: refine.run(decoded), device)
        return {"lr_a2v": tuple(lr), "lr_decode_pose": tuple(dec), "refine_decode": tuple(ref)}

    with torch.no_grad():
        for index in range(segments):
            rows.append(one(index))
        if profile is not None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                one(segments)
            sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            profile.write_text(prof.key_averages().table(sort_by=sort, row_limit=30))

    costs = {c.name: c.flop for c in segment_costs(cfg, settings.lr_steps)}
    pieces = {}
    for piece, names in PIECES.items():
        steady = rows[1:] or rows
        wall = statistics.median(r[piece][0] for r in steady)
        gpu = [r[piece][1] for r in steady if r[piece][1] is not None]
        gpu_ms = statistics.median(gpu) if gpu else None
        flop = sum(costs[n] for n in names)
        pieces[piece] = {
            "wall_ms": wall,
            "gpu_ms": gpu_ms,
            "first_segment_wall_ms": rows[0][piece][0],
            "tflop": flop / 1e12,
            "tflops": flop / ((gpu_ms if gpu_ms is not None else wall) * 1e-3) / 1e12,
        }
    return {
        "bench": "segment pieces",
        **environment(device),
        "weights": parts.source,
        "preset": cfg.name,
        "precision": str(parts.dtype).removeprefix("torch."),
        "compiled": parts.compiled,
        "lr_steps": settings.lr_steps,
        "segments": segments,
        "segment_ms": 1000 * cfg.segment_video_frames / cfg.time.fps,  # the video one segment lasts
        "pieces": pieces,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the generators' blocks")
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--lr-steps", type=int, help="LR-A2V steps (default: the preset's)")
    parser.add_argument(
        "--profile", type=Path, help="write torch.profiler's kernel table of one segment here"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.segments < 1:
        parser.error("--segments must be >= 1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    parts = Parts.random(get_preset(args.preset), device=device).use_precision(args.precision)
    if args.compile:
        parts.compile()
    print(write_report(run(parts, args.segments, args.lr_steps, args.profile), args.out))


if __name__ == "__main__":
    main()
