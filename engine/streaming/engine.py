"""The Engine: model parts loaded once, shared by every session it opens.

Before the first session it measures one segment's compute (warm-up, on the
session clock), which sets the automatic target delay and the on-time
estimate sessions start from. Compiled parts (`Parts.compile`) are built
and the attention kernel tuned there too, for every shape a session can meet.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engine.exceptions import EngineError
from engine.generation.segments import segment
from engine.generation.stages import GenerationSettings, LowResStage, Reference, RefineStage
from engine.media.image import read_image
from engine.parts import Parts
from engine.presets import get_preset
from engine.streaming.clock import Clock, RealClock
from engine.streaming.options import SessionOptions
from engine.streaming.pacing import session_delay
from engine.streaming.pipeline import StageWrapper
from engine.streaming.session import Session, fitted_frame
from engine.streaming.worker import Worker

log = logging.getLogger(__name__)


class TooManySessionsError(EngineError):
    """The engine already runs its maximum number of sessions."""


@dataclass(frozen=True)
class ComputeEstimate:
    """Seconds one segment takes in each stage (measured at warm-up)."""

    low_res: float
    refine: float

    @property
    def total(self) -> float:
        return self.low_res + self.refine


class Engine:
    def __init__(self, parts: Parts, *, clock: Clock | None = None, max_sessions: int | None = None) -> None:
        self.parts = parts
        self.config = parts.config
        self.clock: Clock = clock or RealClock()
        self.max_sessions = max_sessions
        self.sessions: set[Session] = set()
        self._estimate: ComputeEstimate | None = None
        self._estimate_lock = asyncio.Lock()
        self._ids = itertools.count(1)

    @classmethod
    def load(
        cls,
        bundle: Path | str | None = None,
        *,
        preset: str = "tiny",
        device: torch.device | str = "cpu",
        clock: Clock | None = None,
        max_sessions: int | None = None,
    ) -> Engine:
        """From a bundle, or (bundle None) the preset with random weights (to measure speed)."""
        parts = (
            Parts.from_bundle(bundle, device) if bundle else Parts.random(get_preset(preset), device=device)
        )
        return cls(parts, clock=clock, max_sessions=max_sessions)

    async def estimate(self) -> ComputeEstimate:
        """One segment's compute per stage, measured once on a warm-up session (silent audio)."""
        async with self._estimate_lock:
            if self._estimate is None:
                self._estimate = await self._measure()
                e = self._estimate
                log.info(
                    "segment compute: low-res %.0f ms, refine %.0f ms", e.low_res * 1000, e.refine * 1000
                )
        return self._estimate

    async def _measure(self, segments: int = 2) -> ComputeEstimate:
        cfg, parts = self.config, self.parts
        image = torch.full((3, cfg.hr.height, cfg.hr.width), 128, dtype=torch.uint8)
        worker = Worker("warm-up", parts.device)
        try:
            reference = await self.clock.compute(worker, "reference", Reference.encode, parts, image)
            settings = GenerationSettings.from_config(cfg)
            low, refine = LowResStage(parts, reference, settings), RefineStage(parts, reference, settings)
            audio = torch.zeros(
                1,
                cfg.segment.motion_latents + cfg.segment.new_latents,
                cfg.audio_tokens_per_latent,
                cfg.audio.feature_dim,
                device=parts.device,
            )
            # Meet every shape a session can before the segment that is measured: a new shape
            # costs a compile (compiled parts) or an attention tuning run (Triton on a GPU), which
            # must neither stall a session nor pass for a segment's compute (the first GPU run
            # measured a 4.4 s "refine" that way). The refiner's motion latents grow to their full
            # count over the first segments; one LR step (degraded quality) runs the whole
            # sequence instead of the cached context.
            s = cfg.segment
            one_step = 1 if settings.lr_steps > 1 else 0  # segment 0, when there is a cached path
            count = one_step + segments + math.ceil(s.refiner_motion_latents / s.new_latents)
            times = {}
            for index in range(count):  # the first runs pay one-time costs; the last one counts
                seg = segment(index, cfg)
                windows = audio[:, : seg.latent_frames]
                steps = 1 if index < one_step else None
                start = self.clock.now()
                decoded = await self.clock.compute(worker, "low_res", low.run, seg, windows, steps)
                mid = self.clock.now()
                await self.clock.compute(worker, "refine", refine.run, decoded)
                times = {"low_res": mid - start, "refine": self.clock.now() - mid}
        finally:
            await worker.close()
        return ComputeEstimate(**times)

    async def open_session(
        self,
        reference_image: Tensor | Path | str | bytes,
        text: str | None = None,
        options: SessionOptions | None = None,
        *,
        wrap: StageWrapper | None = None,
    ) -> Session:
        """A new session animating `reference_image` (uint8 [3, H, W], or an image file / bytes)."""
        if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
            raise TooManySessionsError(f"all {self.max_sessions} sessions are in use; try again later")
        options = options or SessionOptions()
        image = reference_image if isinstance(reference_image, Tensor) else read_image(reference_image)
        estimate = await self.estimate()
        cfg = self.config
        delay = session_delay(
            cfg, estimate.total, options.target_delay_ms, options.jitter_ms, options.delay_safety
        )
        worker = Worker("reference", self.parts.device)
        try:
            reference = await self.clock.compute(worker, "reference", Reference.encode, self.parts, image)
        finally:
            await worker.close()
        session = Session(
            self.parts,
            self.clock,
            reference,
            fitted_frame(image, cfg.hr.width, cfg.hr.height),
            text,
            options,
            delay,
            (estimate.low_res, estimate.total),
            wrap=wrap,
            name=f"session-{next(self._ids)}",
        )
        self.sessions.add(session)
        return session

    async def close_session(self, session: Session) -> None:
        await session.close()
        self.sessions.discard(session)

    async def close(self) -> None:
        await asyncio.gather(*(self.close_session(s) for s in list(self.sessions)))
