"""The five model parts an engine runs, loaded once from a bundle (or built with random weights).

Sessions share one `Parts`: every per-session state (reference latents, motion
frames, decoder memory) lives in the stages, never in the modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.audio.encoder import AudioEncoder
from engine.checkpoint import PART_BUILDERS, BundleError, load_bundle, read_config
from engine.config import Config
from engine.models.lr_a2v import LRA2V
from engine.models.pose import PoseHead
from engine.models.refiner import PGRefiner
from engine.models.vae import VideoAutoencoder

log = logging.getLogger(__name__)

REQUIRED = ("lr_a2v", "refiner", "vae", "audio", "pose")
DEFAULT_BUNDLE = Path(__file__).parent / "assets" / "demo"  # the embedded demo model, once shipped


@dataclass
class Parts:
    config: Config
    lr_a2v: LRA2V
    refiner: PGRefiner
    vae: VideoAutoencoder
    audio: AudioEncoder
    pose: PoseHead
    source: str  # where the weights came from, for logs and reports

    @property
    def device(self) -> torch.device:
        return next(self.lr_a2v.parameters()).device

    @classmethod
    def from_bundle(cls, folder: Path | str, device: torch.device | str = "cpu") -> Parts:
        """All parts of a bundle; a bundle without one of them is refused, naming what is missing."""
        _, document = read_config(folder)
        missing = [p for p in REQUIRED if p not in document.get("parts", {})]
        if missing:
            raise BundleError(
                f"{folder} lacks the parts {missing} (it has {sorted(document.get('parts', {}))}); "
                "train them into it, or use --preset P --random-weights to measure speed"
            )
        bundle = load_bundle(folder, REQUIRED, device)
        return cls(config=bundle.config, **bundle.parts, source=f"bundle {folder}")

    @classmethod
    def random(cls, config: Config, seed: int = 0, device: torch.device | str = "cpu") -> Parts:
        """Freshly initialised parts: the speed of the real thing, none of its output quality."""
        torch.manual_seed(seed)
        modules = {name: PART_BUILDERS[name](config).to(device).eval() for name in REQUIRED}
        log.info("built %s with random weights (seed %d) on %s", config.name, seed, device)
        return cls(config=config, **modules, source=f"random weights (preset {config.name}, seed {seed})")
