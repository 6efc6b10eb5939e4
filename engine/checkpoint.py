"""Checkpoint bundles: a folder with `config.json` and one `<part>.safetensors` per model part.

    bundle/
        config.json            {"format", "version", "config": {...every shape...}, "parts": {...}}
        lr_a2v.safetensors
        refiner.safetensors
        ...

Weights load from safetensors only: nothing is ever unpickled, and a bundle
holding pickle files (.pt, .pth, .ckpt, .bin, .pkl) is refused. Every tensor
is checked against the model built from the bundle's own config, and a
mismatch names the tensor and both shapes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.audio.encoder import AudioEncoder
from engine.config import Config
from engine.exceptions import ConfigError, EngineError
from engine.models.hand_reward import HandEvaluator
from engine.models.lr_a2v import LRA2V
from engine.models.mouth_judge import MouthJudge
from engine.models.pose import PoseHead
from engine.models.refiner import PGRefiner
from engine.models.vae import VideoAutoencoder

log = logging.getLogger(__name__)

FORMAT = "infinityhuman-bundle"
VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")

PART_BUILDERS: dict[str, Callable[[Config], nn.Module]] = {
    "lr_a2v": LRA2V,
    "refiner": PGRefiner,
    "vae": VideoAutoencoder,
    "audio": AudioEncoder,
    "pose": PoseHead,
    "hand": HandEvaluator,  # training only: the reward of hand feedback learning
    "refiner_teacher": PGRefiner,  # training only: the multi-step refiner the 1-step one is distilled from
    "mouth_judge": MouthJudge,  # evaluation only: the lip-sync reader no loss reads
}
"""How to build each part of a bundle from its config."""


class BundleError(EngineError):
    """A bundle is missing, corrupted, of another version, or does not match its config."""


@dataclass
class Bundle:
    config: Config
    parts: dict[str, nn.Module]
    meta: dict


def save_bundle(
    folder: Path | str,
    config: Config,
    parts: Mapping[str, nn.Module],
    meta: dict | None = None,
    *,
    merge: bool = False,
) -> Path:
    """Write a bundle atomically (into `folder.tmp`, then renamed over `folder`).

    merge: keep what an existing bundle in `folder` has besides these parts (its other
    parts, meta entries and any other files, such as training logs); its config must
    equal `config`.
    """
    folder = Path(folder)
    unknown = set(parts) - set(PART_BUILDERS)
    if unknown:
        raise BundleError(f"unknown parts {sorted(unknown)}; known: {sorted(PART_BUILDERS)}")
    index: dict[str, dict] = {}
    merged_meta: dict = {}
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if merge and folder.is_dir():
        if (folder / "config.json").is_file():
            old_config, document = read_config(folder)
            if old_config != config:
                raise BundleError(f"{folder} holds a bundle of another config; refusing to merge into it")
            index, merged_meta = dict(document.get("parts", {})), dict(document.get("meta", {}))
        shutil.copytree(folder, tmp)
    else:
        tmp.mkdir(parents=True)
    for name, module in parts.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / f"{name}.safetensors"), metadata={"part": name, "format": FORMAT})
        index[name] = {"file": f"{name}.safetensors", "tensors": len(tensors)}
    merged_meta.update(meta or {})
    document = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "parts": index,
        "meta": merged_meta,
    }
    (tmp / "config.json").write_text(json.dumps(document, indent=2, sort_keys=True))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _refuse_pickles(folder: Path) -> None:
    if folder.is_file():
        kind = "a pickle file" if folder.suffix in PICKLE_SUFFIXES else "a file"
        raise BundleError(f"{folder} is {kind}, not a bundle folder; weights load from safetensors only")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise BundleError(
            f"{folder} holds pickle files {pickles}: refusing to load them (they can run code); "
            "convert the weights to safetensors"
        )


def read_config(folder: Path | str) -> tuple[Config, dict]:
    """The bundle's Config and its config.json document."""
    folder = Path(folder)
    if not folder.exists():
        raise BundleError(f"no bundle at {folder}")
    _refuse_pickles(folder)
    try:
        document = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise BundleError(f"{folder} has no config.json") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{folder}/config.json is not valid JSON: {err}") from None
    if document.get("format") != FORMAT:
        raise BundleError(f"{folder} is not an {FORMAT} (format {document.get('format')!r})")
    if document.get("version") != VERSION:
        raise BundleError(f"{folder}: bundle version {document.get('version')}, this engine reads {VERSION}")
    try:
        config = Config.from_dict(document["config"])
    except (ConfigError, KeyError) as err:
        raise BundleError(f"{folder}/config.json: {err}") from None
    return config, document


def load_state(module: nn.Module, path: Path, part: str) -> None:
    """Load a safetensors file into module, refusing missing, unexpected or mis-shaped tensors."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise BundleError(f"{part}: {path.name} is missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{part}: {path.name} is corrupted ({err})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise BundleError(f"{part}: tensors missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise BundleError(
                f"{part}: tensor {name!r} has shape {list(value.shape)} in the bundle but the config "
                f"needs {list(expected[name].shape)}"
            )
    module.load_state_dict(tensors, strict=True)


def load_bundle(
    folder: Path | str, parts: Iterable[str] | None = None, device: torch.device | str = "cpu"
) -> Bundle:
    """Build the requested parts (default: all in the bundle) from the bundle's config and load them."""
    folder = Path(folder)
    config, document = read_config(folder)
    wanted = list(parts) if parts is not None else list(document.get("parts", {}))
    modules = {}
    for name in wanted:
        if name not in document.get("parts", {}):
            raise BundleError(f"{folder} has no part {name!r} (it has {sorted(document.get('parts', {}))})")
        if name not in PART_BUILDERS:
            raise BundleError(f"{folder}: unknown part {name!r}")
        module = PART_BUILDERS[name](config)
        load_state(module, folder / document["parts"][name]["file"], name)
        modules[name] = module.to(device).eval()
    log.info("loaded bundle %s (preset %s, parts %s)", folder, config.name, ", ".join(modules))
    return Bundle(config=config, parts=modules, meta=document.get("meta", {}))
