"""`ihuman train lr-a2v|refiner --latent-cache N`: a generator trained on windows encoded once.

Both generators read frozen parts (LR-A2V: the autoencoder and the audio encoder; the refiner: the
autoencoder and the pose head), so what those make of a training window never changes: encoding
it again every step cost two thirds of an LR-A2V step on a CPU (docs/demo.md), and rendering HR
windows, the pose head and its raster starved the refiner on a GPU. Here N windows of the training
stream are encoded once (the task's `encode`), stored beside the bundle in
`<part>_windows.safetensors`, and batches are drawn from them; the random parts of a batch (for
LR-A2V the start-of-stream history and the noise on the motion latents; for both the condition
dropout, the degradation, the flow time and noise) are still drawn anew each step (`assemble`).

The store names the frozen parts it was made with (their files' digests) and the windows' first
seed: with other parts or other windows it is made again, never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from engine.training.trainer import to_device

log = logging.getLogger(__name__)


class EncodingTask(Protocol):
    """A task whose windows can be stored: it trains `part`, reads the frozen parts `READS` and
    `encode`s a batch of frames with them."""

    part: str
    READS: tuple[str, ...]
    device: torch.device

    def encode(self, batch: dict) -> dict[str, Tensor]: ...


def store_path(bundle: Path, part: str) -> Path:
    """Where the windows of the generator `part` are stored in `bundle`."""
    return bundle / f"{part}_windows.safetensors"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cache_key(bundle: Path, reads: tuple[str, ...], seed: int) -> dict[str, str]:
    """What the stored windows depend on: the frozen parts' file digests and the first window seed."""
    key = {read: _digest(bundle / f"{read}.safetensors") for read in reads}
    return {**key, "seed": str(seed)}


def _stored(path: Path, key: dict[str, str], count: int) -> dict[str, Tensor] | None:
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if json.loads(meta.get("key", "{}")) != key or int(meta.get("windows", 0)) < count:
            return None
        return {name: f.get_tensor(name)[:count] for name in f.keys()}  # noqa: SIM118 (safe_open has no iteration)


def encode_windows(
    task: EncodingTask, stream: Iterator[dict], count: int, bundle: Path, seed: int
) -> dict[str, Tensor]:
    """`count` windows of `stream` encoded by the task's frozen parts, on the CPU: from the
    bundle's store when it holds them for these parts and seed, else made (with progress) and
    stored there."""
    path, key = store_path(bundle, task.part), cache_key(bundle, task.READS, seed)
    stored = _stored(path, key, count)
    if stored is not None:
        log.info("%s: %d encoded windows from %s", task.part, count, path)
        return stored
    parts: dict[str, list[Tensor]] = {}
    made = 0
    with tqdm(total=count, unit="window", desc="encoding windows") as bar:
        while made < count:
            encoded = task.encode(to_device(next(stream), task.device))
            take = min(count - made, next(iter(encoded.values())).shape[0])
            for name, value in encoded.items():
                parts.setdefault(name, []).append(value[:take].cpu())
            made += take
            bar.update(take)
    windows = {name: torch.cat(values).contiguous() for name, values in parts.items()}
    tmp = path.with_suffix(".tmp")
    save_file(windows, str(tmp), metadata={"key": json.dumps(key), "windows": str(count)})
    tmp.replace(path)  # a store is whole or absent
    return windows


def cached_batches(windows: dict[str, Tensor], batch: int, seed: int) -> Iterator[dict[str, Tensor]]:
    """Endless batches of `batch` stored windows: every window once per epoch, in a new order
    each epoch."""
    count = next(iter(windows.values())).shape[0]
    if batch > count:
        raise ValueError(f"--batch {batch} is more than the {count} stored windows (--latent-cache)")
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=g)
        for start in range(0, count - batch + 1, batch):
            pick = order[start : start + batch]
            yield {name: value[pick] for name, value in windows.items()}
