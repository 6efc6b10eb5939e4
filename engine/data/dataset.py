"""PyTorch datasets of aligned training windows, from disk (`ClipWindows`) or made on the fly.

A window of T video frames starting at frame s carries the audio samples
[s * 640, (s + T) * 640) (samples per frame from the config's time base), the
keypoints and pose tensor of the same frames, and the clip's first frame as
the reference image. Frames can be read at any resolution of the stored
aspect ratio; keypoints are in canvas units, valid at every resolution.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from engine.config import TimeBase
from engine.data.clip import check_resolution, make_clip
from engine.data.store import DataError, StoredClip, list_clips, read_clip, read_meta
from engine.exceptions import ConfigError
from engine.media.image import cover
from engine.pose.pose_tensor import pose_tensor


@dataclass(frozen=True)
class WindowSpec:
    frames: int  # video frames per window
    width: int  # output frame size
    height: int
    pose_stride: int = 4  # output pixels per pose-tensor pixel
    time: TimeBase = field(default_factory=TimeBase)

    def __post_init__(self) -> None:
        check_resolution(self.width, self.height)
        if self.frames < 1 or self.width % self.pose_stride or self.height % self.pose_stride:
            raise ConfigError(f"invalid window {self}")


def _resize(frames: Tensor, width: int, height: int) -> Tensor:
    """uint8 [T, 3, h, w] -> float [T, 3, H, W] in [0, 1], framed as the engine frames pictures."""
    return cover(frames.float() / 255.0, width, height).clamp(0, 1)


def cut_window(
    frames: Tensor,
    audio: np.ndarray,
    points: Tensor,
    visibility: Tensor,
    mouth_open: Tensor,
    start: int,
    spec: WindowSpec,
) -> dict[str, Tensor | int]:
    """The aligned window of spec.frames frames starting at frame `start`."""
    stop = start + spec.frames
    if start < 0 or stop > frames.shape[0]:
        raise DataError(f"window [{start}, {stop}) outside a clip of {frames.shape[0]} frames")
    h, w = frames.shape[-2:]
    # Keypoints are in canvas units (height = 1, x from the centre): a centre crop of the width
    # keeps them; a crop of the height would not.
    if spec.width / spec.height > w / h * 1.02:
        raise ConfigError(
            f"window {spec.width}x{spec.height} is wider than the clip ({w}x{h}): keypoints would not hold"
        )
    spf = spec.time.samples_per_frame
    window_points = points[start:stop]
    return {
        "frames": _resize(frames[start:stop], spec.width, spec.height),  # [T, 3, H, W]
        "audio": torch.from_numpy(audio[start * spf : stop * spf].copy()),  # [T * spf]
        "points": window_points,  # [T, K, 2]
        "visibility": visibility[start:stop],  # [T, K]
        "mouth_open": mouth_open[start:stop],  # [T]
        "pose": pose_tensor(window_points, spec.width // spec.pose_stride, spec.height // spec.pose_stride),
        "reference": _resize(frames[:1], spec.width, spec.height)[0],  # [3, H, W]
        "start_frame": start,
        "audio_start": start * spf,
    }


class ClipWindows(Dataset):
    """Windows of every clip under `root`, `hop` frames apart.

    The last `cache` decoded clips are kept, so a sampler that visits a few clips
    at a time (ClipGroupedSampler) decodes each clip once per epoch.
    """

    def __init__(self, root: Path | str, spec: WindowSpec, hop: int | None = None, cache: int = 1) -> None:
        self.root = Path(root)
        self.spec = spec
        self.clips = list_clips(self.root)
        if not self.clips:
            raise DataError(f"no clips under {self.root}")
        hop = hop or spec.frames
        self.index: list[tuple[int, int]] = []
        for i, folder in enumerate(self.clips):
            meta = read_meta(folder)
            if meta["fps"] != spec.time.fps or meta["sample_rate"] != spec.time.sample_rate:
                raise DataError(
                    f"{folder}: {meta['fps']} fps / {meta['sample_rate']} Hz differ from the time base"
                )
            self.index += [(i, s) for s in range(0, meta["frames"] - spec.frames + 1, hop)]
        self.cache = cache
        self._cached: OrderedDict[int, StoredClip] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def _clip(self, i: int) -> StoredClip:
        if i in self._cached:
            self._cached.move_to_end(i)
        else:
            self._cached[i] = read_clip(self.clips[i])
            while len(self._cached) > self.cache:
                self._cached.popitem(last=False)
        return self._cached[i]

    def __getitem__(self, item: int) -> dict[str, Tensor | int]:
        i, start = self.index[item]
        c = self._clip(i)
        return cut_window(c.frames, c.audio, c.points, c.visibility, c.mouth_open, start, self.spec) | {
            "identity": c.meta["identity"]
        }


class ClipGroupedSampler(Sampler[int]):
    """Shuffles clips, then the windows of `mix` clips at a time among themselves.

    A plain shuffle would make ClipWindows decode a whole clip for every window;
    one clip at a time would fill each batch with one character. With a dataset
    cache of `mix` clips, each clip is decoded once per epoch and a batch mixes
    up to `mix` characters.
    """

    def __init__(self, dataset: ClipWindows, mix: int = 1, generator: torch.Generator | None = None) -> None:
        self.groups: dict[int, list[int]] = {}
        for item, (clip, _) in enumerate(dataset.index):
            self.groups.setdefault(clip, []).append(item)
        self.mix = mix
        self.generator = generator

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def __iter__(self) -> Iterator[int]:
        clips = list(self.groups)
        order = [clips[c] for c in torch.randperm(len(clips), generator=self.generator).tolist()]
        for start in range(0, len(order), self.mix):
            items = [i for clip in order[start : start + self.mix] for i in self.groups[clip]]
            yield from (items[i] for i in torch.randperm(len(items), generator=self.generator).tolist())


class ProceduralWindows(IterableDataset):
    """Windows of clips generated in memory (no disk): seeds are split between loader workers."""

    def __init__(
        self, seeds: Sequence[int], seconds: float, spec: WindowSpec, hop: int | None = None
    ) -> None:
        self.seeds, self.seconds, self.spec = list(seeds), seconds, spec
        self.hop = hop or spec.frames
        frames = round(seconds * spec.time.fps)
        if frames < spec.frames:  # no window would fit: iterating would render clips forever
            raise ConfigError(
                f"clips of {seconds} s ({frames} frames) are shorter than a window of {spec.frames}"
            )

    def __iter__(self) -> Iterator[dict[str, Tensor | int]]:
        info = get_worker_info()
        seeds = self.seeds if info is None else self.seeds[info.id :: info.num_workers]
        for seed in seeds:
            clip = make_clip(seed, self.seconds, self.spec.width, self.spec.height, self.spec.time)
            for start in range(0, clip.num_frames - self.spec.frames + 1, self.hop):
                window = cut_window(
                    clip.frames, clip.audio, clip.points, clip.visibility, clip.mouth_open, start, self.spec
                )
                yield window | {"identity": seed}


class Shuffled(IterableDataset):
    """Yields the items of an iterable dataset in a random order within a buffer of `size`.

    On-the-fly clips come out window after window of one character; shuffled
    through a buffer, a batch mixes several characters (a far less noisy gradient).
    """

    def __init__(self, items: IterableDataset, size: int = 32, seed: int = 0) -> None:
        self.items, self.size, self.seed = items, size, seed

    def __iter__(self) -> Iterator[dict[str, Tensor | int]]:
        info = get_worker_info()
        rng = np.random.default_rng(self.seed + (info.id if info is not None else 0))
        buffer: list[dict[str, Tensor | int]] = []
        for item in self.items:
            if len(buffer) < self.size:
                buffer.append(item)
                continue
            i = int(rng.integers(len(buffer)))
            yield buffer[i]
            buffer[i] = item
        rng.shuffle(buffer)  # type: ignore[arg-type]
        yield from buffer
