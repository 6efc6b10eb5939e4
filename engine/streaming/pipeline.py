"""A session's two generation stages, each on its own worker, and the hand-off between them.

    submit(job) --[queue: 1]--> low-res worker (CUDA stream A | a CPU thread): LowResStage,
        LR frames published as the fallback --[queue: 1]--> refine worker (stream B | a thread):
        RefineStage, refined frames published

The queues hold one segment each: while the refine worker works on segment n, the LR worker
generates segment n + 1. A segment that can no longer be on time is skipped; a refiner still busy
when the next segment is ready loses its queued segment (the LR frames stand in). Work of an older
generation (before an interrupt) is dropped wherever it is found.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from torch import Tensor

from engine.frames import FrameSource, StageTimes
from engine.generation.segments import Segment
from engine.generation.stages import (
    DecodedLowRes,
    GenerationSettings,
    LowResStage,
    Reference,
    RefineStage,
    StageError,
)
from engine.parts import Parts
from engine.streaming.clock import Clock
from engine.streaming.pacing import MovingAverage, Quality, Timeline
from engine.streaming.stats import StatsCollector
from engine.streaming.worker import Handoff, Worker

T = TypeVar("T")
StageWrapper = Callable[[str, Callable[..., Any]], Callable[..., Any]]
"""wrap(stage name, fn) -> fn: instruments or slows a stage (benchmarks and tests)."""

MAX_SKIPS_IN_A_ROW = 8  # segments dropped as too late before one runs regardless (and is measured)


@dataclass(frozen=True)
class Job:
    """One planned segment on its way through the stages."""

    seg: Segment
    audio: Handoff  # [1, M + N, A, D] windows, made on the loop's stream (on CUDA: the default one)
    generation: int
    audio_ready: float  # when the window was complete or overdue
    heard: float | None  # arrival of the last sample the segment was made from (None: none of its own)
    heard_stop: int | None = None  # one past the last sample in when it ran (None: all of its window)
    quality: Quality | None = None  # set when the LR worker takes it


@dataclass(frozen=True)
class Ready:
    """Frames of one segment, published for the pacer."""

    job: Job
    images: Tensor  # uint8 [T, H, W, 3]
    source: FrameSource
    times: StageTimes


class StagePipeline:
    """Owns the stages, their workers and queues, the generation counter and the compute estimates."""

    def __init__(
        self,
        parts: Parts,
        clock: Clock,
        timeline: Timeline,
        reference: Reference,
        settings: GenerationSettings,
        compute_estimate_s: tuple[float, float],
        quality: Callable[[], Quality],
        publish: Callable[[Ready], None],
        stats: StatsCollector,
        name: str,
        wrap: StageWrapper | None = None,
        stall_timeout_s: float = 30.0,
    ) -> None:
        self.parts, self.config, self.clock, self.timeline = parts, parts.config, clock, timeline
        self._quality, self._publish, self.stats = quality, publish, stats
        self._low = LowResStage(parts, reference, settings)
        self._refine = RefineStage(parts, reference, settings)
        self.stall_timeout_s = stall_timeout_s
        wrap = wrap or (lambda _name, fn: fn)
        self._run_low_res = wrap("low_res", self._low_res_fn)
        self._run_refine = wrap("refine", self._refine_fn)
        self._lr_worker = Worker(f"{name}-low-res", parts.device)
        self._refine_worker = Worker(f"{name}-refine", parts.device)
        # Seconds of one segment in the low-res stage and in both stages, updated as measured.
        low_res, both = compute_estimate_s
        self.low_res_estimate, self.estimate = MovingAverage(low_res), MovingAverage(both)
        self._skips_in_a_row = 0
        self.generation = 0
        self._lr_queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=1)
        self._refine_queue: asyncio.Queue[tuple[Job, Handoff, StageTimes]] = asyncio.Queue(maxsize=1)

    async def run(self) -> None:
        """The two stage loops (until cancelled)."""
        await asyncio.gather(self._low_res_loop(), self._refine_loop())

    # ----- control ------------------------------------------------------------------------------
    async def submit(self, job: Job) -> None:
        """Queue a planned segment (waits while the LR stage is busy); a late one is skipped."""
        if not self._skip_if_too_late(job.seg):
            await self._lr_queue.put(job)

    def new_generation(self) -> int:
        """Interrupt: drop every queued segment; work still running is dropped when it ends."""
        self.generation += 1
        for q in (self._lr_queue, self._refine_queue):
            while not q.empty():
                q.get_nowait()
        return self.generation

    def first_on_time(self, seg_frames: int) -> int:
        """The first segment that, started now through both stages, can still be on time."""
        t = self.timeline
        ahead = self.clock.now() + self.estimate.value - t.t0 - t.delay
        return max(0, math.ceil(ahead * t.fps / seg_frames))

    async def set_reference(self, reference_image: Tensor) -> None:
        """Encode another picture on the LR worker; both stages animate it from their next segment."""
        encode, parts = Reference.encode, self.parts
        reference = await self.clock.compute(self._lr_worker, "reference", encode, parts, reference_image)
        self._low.set_reference(reference)
        self._refine.set_reference(reference)

    def set_text(self, text: str | None) -> None:
        tokens = self.parts.text_tokens(text)
        self._low.set_text(tokens)
        self._refine.set_text(tokens)

    async def close(self, timeout: float) -> None:
        await self._lr_worker.close(timeout)
        await self._refine_worker.close(timeout)

    # ----- stage loops --------------------------------------------------------------------------
    def _too_late(self, seg: Segment) -> bool:
        """Even started now, the segment's last LR frame would miss its due time."""
        last = self.timeline.frame_due(seg.first_frame + seg.output_frames - 1)
        return self.clock.now() + self.low_res_estimate.value > last

    def _skip_if_too_late(self, seg: Segment) -> bool:
        """Drop a segment that can no longer be on time (the stream catches up); True if dropped.
        Only a run measures the LR estimate that says so, so after one very slow call it would
        call every later segment too late and the session would show its last frame for good:
        after MAX_SKIPS_IN_A_ROW skips the next segment runs anyway and is measured. Under a
        steady overload that is one late segment in 9, not every one (docs/latency-harness.md)."""
        if self._too_late(seg) and self._skips_in_a_row < MAX_SKIPS_IN_A_ROW:
            self._skips_in_a_row += 1
            self.stats.skipped_segments += 1
            return True
        return False  # the count restarts when it runs (it passes both checks)

    def _stale(self, job: Job) -> bool:
        return job.generation != self.generation

    def _low_res_fn(self, job: Job) -> tuple[Handoff, Tensor]:
        assert job.quality is not None
        audio = job.audio.take(job.audio.value)  # ordered after the stream that computed it
        decoded = self._low.run(job.seg, audio, job.quality.lr_steps)
        preview = decoded.preview(self.config.hr.width, self.config.hr.height)
        return Handoff.make(decoded, self.parts.device), preview

    def _refine_fn(self, handoff: Handoff) -> Tensor:
        decoded: DecodedLowRes = handoff.take(handoff.value.latents, handoff.value.keypoints)
        return self._refine.run(decoded)

    async def _compute(self, worker: Worker, stage: str, fn: Callable[..., T], arg: Any) -> T:
        """fn(arg) on the stage's worker, watched: no result within stall_timeout_s is a stall."""
        try:
            return await asyncio.wait_for(self.clock.compute(worker, stage, fn, arg), self.stall_timeout_s)
        except TimeoutError:
            # The thread cannot be stopped; it is left to its call and the session ends.
            raise StageError(f"the {stage} stage stalled: no result in {self.stall_timeout_s:g} s") from None

    async def _low_res_loop(self) -> None:
        while True:
            job = await self._lr_queue.get()
            if self._stale(job):
                continue
            if self._skip_if_too_late(job.seg):
                continue
            self._skips_in_a_row = 0
            job = replace(job, quality=self._quality())
            start = self.clock.now()
            handoff, preview = await self._compute(self._lr_worker, "low_res", self._run_low_res, job)
            end = self.clock.now()
            self.stats.stage("low_res", end - start)
            self.low_res_estimate.add(end - start)
            if self._stale(job):
                continue
            times = StageTimes(audio_ready=job.audio_ready, low_res_start=start, low_res_end=end)
            self._publish(Ready(job, preview, FrameSource.LOW_RES, times))
            assert job.quality is not None
            if job.quality.refine:
                # Never wait for a busy refiner (the LR frames would be late too): a segment still
                # queued for refining is dropped for this newer one, and shows its LR frames.
                if self._refine_queue.full():
                    self._refine_queue.get_nowait()
                    self.stats.refine_dropped += 1
                self._refine_queue.put_nowait((job, handoff, times))
            else:
                self.estimate.add(end - start)

    async def _refine_loop(self) -> None:
        while True:
            job, handoff, times = await self._refine_queue.get()
            if self._stale(job):
                continue
            start = self.clock.now()
            refined = await self._compute(self._refine_worker, "refine", self._run_refine, handoff)
            end = self.clock.now()
            self.stats.stage("refine", end - start)
            low_res = (times.low_res_end or start) - (times.low_res_start or start)
            self.estimate.add(low_res + end - start)
            if not self._stale(job):
                self._publish(
                    Ready(
                        job, refined, FrameSource.REFINED, replace(times, refine_start=start, refine_end=end)
                    )
                )
