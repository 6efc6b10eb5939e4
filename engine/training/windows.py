"""Training windows and what every task shares: batches from the procedural generator on the fly
(DataLoader workers render while the main process trains) or from clips on disk (`--data DIR`),
held-out characters (seeds the training never sees), and small frame helpers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from engine.data.dataset import ClipGroupedSampler, ClipWindows, ProceduralWindows, Shuffled
from engine.training.task import Task

HELD_OUT_SEED = 1_000_000  # evaluation characters start here; training seeds stay below


def psnr(a: Tensor, b: Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(a.clamp(0, 1), b).clamp_min(1e-10)))


def random_crop(
    frames: Tensor, size: int, multiple: int, centre: tuple[float, float] | None = None
) -> Tensor:
    """The same size x size window of every frame [..., H, W], its corner on a `multiple` grid:
    around `centre` (x, y pixels) when given, anywhere otherwise."""
    return crop_window(frames, size, multiple, centre)[0]


def crop_window(
    frames: Tensor, size: int, multiple: int, centre: tuple[float, float] | None = None
) -> tuple[Tensor, tuple[int, int]]:
    """random_crop, and the (top, left) pixel of the window."""
    H, W = frames.shape[-2:]
    if size >= min(H, W):
        return frames, (0, 0)
    if centre is None:
        top = int(torch.randint(0, (H - size) // multiple + 1, ()))
        left = int(torch.randint(0, (W - size) // multiple + 1, ()))
    else:
        top = min(max(0, round((centre[1] - size / 2) / multiple)), (H - size) // multiple)
        left = min(max(0, round((centre[0] - size / 2) / multiple)), (W - size) // multiple)
    top, left = top * multiple, left * multiple
    return frames[..., top : top + size, left : left + size], (top, left)


def clip_with_reference(reference: Tensor, frames: Tensor) -> Tensor:
    """reference [B, 3, H, W] + frames [B, T, 3, H, W] -> the autoencoder's clip [B, 3, 1 + T, H, W]."""
    return torch.cat([reference[:, :, None], frames.transpose(1, 2)], dim=2)


def batches(
    task: Task,
    batch: int,
    *,
    seed: int,
    seconds: float,
    workers: int,
    data: Path | None = None,
    pin_memory: bool = False,
) -> Iterator[dict]:
    """An endless stream of training batches (pin_memory: in page-locked memory, for a GPU)."""
    own = task.stream(range(seed, HELD_OUT_SEED), batch, workers)
    if own is not None:
        while True:
            yield from own
    if data is not None:
        mix = min(batch, 8)  # characters per batch (and decoded clips held per loader worker)
        dataset = ClipWindows(data, task.spec, hop=max(1, task.spec.frames // 2), cache=mix)
        order = ClipGroupedSampler(dataset, mix, torch.Generator().manual_seed(seed))
        while True:
            yield from DataLoader(
                dataset,
                batch_size=batch,
                sampler=order,
                num_workers=workers,
                drop_last=True,
                pin_memory=pin_memory,
            )
    # Seeds of on-the-fly clips never reach the held-out range.
    for epoch in itertools.count():
        start = seed + epoch * 10_000
        seeds = range(start, min(start + 10_000, HELD_OUT_SEED))
        windows = Shuffled(ProceduralWindows(seeds, seconds, task.spec), size=4 * batch, seed=start)
        yield from DataLoader(
            windows, batch_size=batch, num_workers=workers, drop_last=True, pin_memory=pin_memory
        )


def held_out(task: Task, clips: int, seconds: float, batch: int) -> list[dict]:
    """Batches of `clips` characters the training never sees."""
    seeds = range(HELD_OUT_SEED, HELD_OUT_SEED + clips)
    own = task.stream(seeds, batch, 0)
    if own is not None:
        return list(own)
    return list(DataLoader(ProceduralWindows(seeds, seconds, task.spec), batch_size=batch))
