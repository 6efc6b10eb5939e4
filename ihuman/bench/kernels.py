"""Attention speed on the paper preset's shapes: `python -m ihuman.bench.kernels [--out FILE.json]`.

Times our Triton forward against torch's SDPA with the flash and the cuDNN
backends forced, in the same run, with warm-up, CUDA events and the median of
many runs (ours with the launch settings `ihuman_kernels/attention/tuning.py` timed fastest for the
shape, listed in the report); reports TFLOP/s (counting only the query-key pairs the mask lets
through) and the ratio to each SDPA backend. SDPA's flash and cuDNN backends
take no block mask, so each masked shape is also timed as full attention for
them (and for us, so every ratio compares the same work). `--smoke` runs tiny
shapes anywhere (Triton's interpreter on a CPU) to check the script itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from engine.benchinfo import environment, write_report
from engine.presets import get_preset
from ihuman.bench.ceilings import median_ms
from ihuman_kernels.attention import attention, tuning


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    lq: int
    lk: int
    head_dim: int
    groups: tuple[int, ...] | None = None

    def pairs(self, masked: bool) -> int:
        """Query-key pairs computed (per batch row and head)."""
        if not masked or self.groups is None:
            return self.lq * self.lk
        ends, start, total = [], 0, 0
        for g in self.groups:
            start += g
            ends.append(start)
        for g, end in zip(self.groups, ends, strict=True):
            total += g * end
        return total


def paper_shapes() -> list[Shape]:
    """The attention calls of one segment of the paper preset (engine/presets.py)."""
    cfg = get_preset("paper")
    s, d = cfg.segment, cfg.lr_a2v.head_dim
    lr, hr = cfg.lr_tokens_per_latent, cfg.hr_tokens_per_latent
    heads = cfg.lr_a2v.heads
    lr_groups = (s.prefix_latents * lr, s.motion_latents * lr, s.new_latents * lr)
    hr_groups = (s.prefix_latents * hr, s.refiner_motion_latents * hr, s.new_latents * hr)
    long_groups = (hr, hr, 4 * hr)  # a refiner chunk of 4 new latents: ~22k tokens
    frames = s.motion_latents + s.new_latents
    return [
        Shape("LR self-attention", 1, heads, sum(lr_groups), sum(lr_groups), d, lr_groups),
        # with the context cache: the new frames against the cached context and themselves
        Shape("LR self-attention, cached step", 1, heads, s.new_latents * lr, sum(lr_groups), d),
        Shape("HR self-attention", 1, heads, sum(hr_groups), sum(hr_groups), d, hr_groups),
        Shape(
            "HR self-attention, 4 new latents", 1, heads, sum(long_groups), sum(long_groups), d, long_groups
        ),
        Shape("audio cross-attention", frames, heads, lr, cfg.audio_tokens_per_latent, d),
        Shape("text cross-attention", 1, heads, sum(hr_groups), 64, d),
    ]


def smoke_shapes() -> list[Shape]:
    return [
        Shape("smoke self-attention", 1, 2, 40, 40, 32, (8, 12, 20)),
        Shape("smoke cross", 2, 2, 24, 9, 64),
    ]


def _sdpa(backend: SDPBackend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    return run


def measure(shape: Shape, device: torch.device, dtype: torch.dtype, runs: int, warmup: int) -> dict:
    g = torch.Generator(device).manual_seed(0)
    q = torch.randn(
        shape.batch, shape.heads, shape.lq, shape.head_dim, device=device, dtype=dtype, generator=g
    )
    k, v = (
        torch.randn(
            shape.batch, shape.heads, shape.lk, shape.head_dim, device=device, dtype=dtype, generator=g
        )
        for _ in range(2)
    )
    flops = lambda masked: 4 * shape.batch * shape.heads * shape.pairs(masked) * shape.head_dim  # noqa: E731
    row: dict = {"shape": shape.name, "B": shape.batch, "H": shape.heads, "Lq": shape.lq, "Lk": shape.lk,
                 "D": shape.head_dim, "groups": shape.groups}  # fmt: skip
    timings = {"ours_full": median_ms(lambda: attention(q, k, v, backend="triton"), device, runs, warmup)}
    if shape.groups is not None:
        timings["ours_masked"] = median_ms(
            lambda: attention(q, k, v, groups=shape.groups, backend="triton"), device, runs, warmup
        )
    if device.type == "cuda":
        for name, backend in (
            ("sdpa_flash", SDPBackend.FLASH_ATTENTION),
            ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
        ):
            try:
                timings[name] = median_ms(_sdpa(backend, q, k, v), device, runs, warmup)
            except RuntimeError as err:  # the backend does not take this shape/dtype here
                row[f"{name}_error"] = str(err).splitlines()[0][:200]
    row["ms"] = timings
    row["tflops"] = {name: flops(name == "ours_masked") / (ms * 1e-3) / 1e12 for name, ms in timings.items()}
    for name in ("sdpa_flash", "sdpa_cudnn"):
        if name in timings:
            row[f"speedup_vs_{name}"] = timings[name] / timings["ours_full"]
    if "ours_masked" in timings:
        row["mask_saving"] = 1 - timings["ours_masked"] / timings["ours_full"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, any device (checks the script)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("ihuman.bench.kernels times GPU kernels: run it on a CUDA machine (or --smoke here)")
    dtype = getattr(torch, args.dtype)
    shapes = smoke_shapes() if args.smoke else paper_shapes()
    rows = [measure(s, device, dtype, args.runs, args.warmup) for s in shapes]
    report = {
        "bench": "attention forward",
        **environment(device),
        "dtype": args.dtype,
        "runs": args.runs,
        "rows": rows,
        # the launch settings the kernel kept for each shape, with every candidate's milliseconds
        "tuning": tuning.tuned(),
    }
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
