"""`ihuman data make` and `ihuman train`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tqdm import tqdm

from engine.checkpoint import read_config
from engine.data.make import make_dataset
from engine.exceptions import ConfigError
from engine.presets import PRESETS, get_preset
from engine.training.generators import LRA2VTask
from engine.training.latent_windows import cached_batches, encode_windows
from engine.training.refiners import RefinerTask
from engine.training.registry import TASKS, build_task
from engine.training.trainer import Trainer, TrainSettings, to_device
from engine.training.windows import batches, held_out
from ihuman import loading
from ihuman.arguments import count, decay, minutes, positive, resolution


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
    device = loading.torch_device(args.device)
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
    step_fn = task.loss
    if args.latent_cache:
        # Not their subclasses: hand-refl compares what it samples with the real frames, and
        # distill regresses onto its teacher (latent_loss is the flow loss).
        if type(task) not in (LRA2VTask, RefinerTask):
            raise ConfigError(f"--latent-cache is for the lr-a2v and refiner tasks, not {task.name}")
        windows = encode_windows(task, stream, args.latent_cache, out, args.seed)
        stream = (to_device(b, device) for b in cached_batches(windows, args.batch, args.seed + trainer.step))
        step_fn = task.latent_loss
    with tqdm(total=args.steps, initial=trainer.step, unit="step", desc=task.name) as bar:

        def progress(step: int, row: dict) -> None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "seconds")})

        finished = trainer.run(stream, step_fn, on_step=progress)
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


def add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="procedural talking-avatar data").add_subparsers(
        dest="data", required=True
    )
    make = data.add_parser("make", help="write N procedural clips (resumes an interrupted run)")
    make.add_argument("--out", type=Path, required=True, help="output folder")
    make.add_argument("--clips", type=int, default=100, help="number of clips (default 100)")
    make.add_argument("--seconds", type=float, default=4.0, help="seconds per clip (default 4)")
    make.add_argument("--res", type=resolution, default=(640, 352), help="WIDTHxHEIGHT (default 640x352)")
    make.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="processes")
    make.add_argument("--seed", type=int, default=0, help="first seed; clip i has seed SEED + i")
    make.set_defaults(func=cmd_data_make)


def add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a part on procedural (or stored) data into a bundle")
    train.add_argument("task", choices=TASKS)
    train.add_argument("--out", type=Path, required=True, help="bundle folder (created, or resumed)")
    train.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="preset of a new bundle")
    train.add_argument(
        "--steps",
        type=count,
        default=1000,
        help="total steps (a resumed run continues to this; 0 stores the part untrained)",
    )
    train.add_argument("--batch", type=int, default=4)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--res", type=resolution, help="frame size (default: HR for vae, LR otherwise)")
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
        "--eval-clips", type=count, default=4, help="held-out characters to evaluate on (0: none)"
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
        type=decay,
        help="store the moving average of the weights with this decay (e.g. 0.999; default: the raw weights)",
    )
    train.add_argument(
        "--latent-cache",
        type=positive,
        metavar="N",
        help="lr-a2v, refiner: encode N training windows once (stored in the bundle) and train on "
        "them (lr-a2v: steps cost a third, without the pixel term on the lips)",
    )
    train.add_argument(
        "--time-limit",
        type=minutes,
        help="minutes: stop with a checkpoint after this (resume later)",
    )
    train.set_defaults(func=cmd_train)
