"""The five model parts an engine runs, loaded once from a bundle (or built with random weights).

Sessions share one `Parts`: every per-session state (reference latents, motion
frames, decoder memory) lives in the stages, never in the modules.
"""

from __future__ import annotations

import contextlib
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
from engine.models.text import TextTokens, tokenize
from engine.models.vae import VideoAutoencoder

log = logging.getLogger(__name__)

REQUIRED = ("lr_a2v", "refiner", "vae", "audio", "pose")
PRECISIONS = ("auto", "bf16", "fp32")
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
    dtype: torch.dtype = torch.float32  # the two generators' weights and matrix arithmetic
    compiled: bool = False  # the generators' blocks run through torch.compile (`compile`)

    @property
    def device(self) -> torch.device:
        return next(self.lr_a2v.parameters()).device

    def use_precision(self, precision: str = "auto") -> Parts:
        """Hold the two generators (LR-A2V, PG-Refiner) in bfloat16 ("bf16"), or float32 ("fp32");
        "auto": bf16 on CUDA, fp32 elsewhere.

        Why only them: they are 99 % of a segment's FLOPs and nearly all the weight bytes, and
        bf16 halves both the bytes read and the time of every matrix product on a GPU's tensor
        cores. The autoencoder, audio encoder and pose head stay float32: small, and the picture's
        own precision. On a CPU bf16 is slower than fp32, hence the default."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.lr_a2v.to(self.dtype)
        self.refiner.to(self.dtype)
        return self

    def compile(self, backend: str = "inductor") -> Parts:
        """Run every transformer block of the two generators through torch.compile (`backend`:
        Inductor, or another of torch.compile's, e.g. "aot_eager" to trace without building kernels).

        Why blocks, not whole models: the blocks of a model are alike, so one compiled graph per
        input shape serves all of them (the paper preset's shapes build in about a minute on an
        H200), and the per-segment Python around them stays plain. What it buys: eager, a block
        is dozens of kernel launches, most of them small elementwise ops (norms, RoPE, modulation,
        gates, casts), and at paper size the GPU waits on the Python that launches them; fused,
        they are a few (a segment 578 -> 418 ms on an H200, docs/perf.md). Shapes are static (one
        graph per shape): the engine's warm-up meets each one a session will (`Engine.estimate`)."""
        for model in (self.lr_a2v, self.refiner):
            for block in model.dit.blocks:
                block.compile(dynamic=False, backend=backend)
        self.compiled = True
        return self

    def text_tokens(self, text: str | None) -> TextTokens:
        """A prompt's tokens for the generators (padded to one length when they are compiled)."""
        return tokenize([text], self.config.text, self.device, full_length=self.compiled)

    def generating(self) -> contextlib.AbstractContextManager:
        """The context the generators run in: autocast to their dtype, so that float32 latents,
        noise and conditions meet bf16 weights in bf16 products (norms and softmax statistics stay
        float32 inside the ops) and the outputs come back to the float32 sampler."""
        return torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32)

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
        # Built on the device: initialising paper-size weights on the CPU first takes longer than
        # the rest of a benchmark's start.
        with torch.device(device):
            modules = {name: PART_BUILDERS[name](config).to(device).eval() for name in REQUIRED}
        log.info("built %s with random weights (seed %d) on %s", config.name, seed, device)
        return cls(config=config, **modules, source=f"random weights (preset {config.name}, seed {seed})")
