"""A live session: audio in, frames at exactly 25 fps and the audio delayed to match, out.

    push_audio -> SessionInput (input.py): VAD gate, audio features, the plan of segments
      -> StagePipeline (pipeline.py): low-res worker, then refine worker; frames published
      -> SessionOutput (output.py): frame store, pacer (frame n at t0 + D + n / 25), fallbacks,
         degrade feedback; audio_out() plays sample s at t0 + D + s / 16000 (the same schedule)

The Session is the front the transport and the benchmarks hold: it builds the three owners from one
Timeline (pacing.py owns the delay D and the due times) and coordinates what involves more than one
of them: an interrupt, a new picture, closing. Control skips ahead of data: `interrupt()` drops
queued audio and unrendered segments and plans idle segments from the first one that can still be
on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from engine.exceptions import EngineError
from engine.frames import AudioChunk, VideoFrame
from engine.generation.stages import GenerationSettings, Reference
from engine.media.image import fit_image
from engine.parts import Parts
from engine.streaming.clock import Clock
from engine.streaming.input import SessionInput
from engine.streaming.options import SessionOptions
from engine.streaming.output import SessionOutput
from engine.streaming.pacing import DegradePolicy, Timeline
from engine.streaming.pipeline import StagePipeline, StageWrapper
from engine.streaming.placement import ProducerClock
from engine.streaming.stats import SessionStats, StatsCollector

__all__ = ["Session", "SessionClosedError", "SessionOptions", "StageWrapper", "fitted_frame"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 10.0


class SessionClosedError(EngineError):
    """The session was closed."""


class Session:
    """One avatar stream. Make it with `Engine.open_session`; close it with `close()`."""

    def __init__(
        self,
        parts: Parts,
        clock: Clock,
        reference: Reference,
        reference_frame: np.ndarray,
        text: str | None,
        options: SessionOptions,
        delay_s: float,
        compute_estimate_s: tuple[float, float],
        wrap: StageWrapper | None = None,
        name: str = "session",
    ) -> None:
        cfg = parts.config
        self.config, self.parts, self.clock, self.options, self.name = cfg, parts, clock, options, name
        self.timeline = Timeline(clock.now(), delay_s, cfg.time.fps, cfg.time.sample_rate)
        settings = GenerationSettings.from_config(cfg, replace(options.generation, text=text))
        self.stats = StatsCollector()
        policy = DegradePolicy(settings.lr_steps, enabled=options.degrade)
        self.output = SessionOutput(
            clock, self.timeline, cfg.segment_video_frames, cfg.time.samples_per_frame,
            reference_frame, policy, self.stats,
        )  # fmt: skip
        self.pipeline = StagePipeline(
            parts, clock, self.timeline, reference, settings, compute_estimate_s,
            lambda: self.output.quality, self.output.publish, self.stats, name, wrap,
            options.stall_timeout_s,
        )  # fmt: skip
        self.input = SessionInput(parts, clock, self.timeline, options, self.stats, self._start)
        self._closed = False
        self.failure: str | None = None  # why the session stopped making frames, when a part failed
        self._failed = asyncio.Event()
        self._stages = self._start(self.pipeline.run(), "stages")
        self.input.schedule(0, self.pipeline.generation, self.pipeline.submit)
        log.info("%s: started with delay %.0f ms", name, delay_s * 1000)

    @property
    def t0(self) -> float:
        return self.timeline.t0

    @property
    def delay(self) -> float:
        """D in seconds (fixed for the session's life)."""
        return self.timeline.delay

    @property
    def generation(self) -> int:
        return self.pipeline.generation

    @property
    def reference_frame(self) -> np.ndarray:
        """The picture at the output size, uint8 [H, W, 3]: shown until the first segment is ready."""
        return self.output.reference_frame

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames the session makes."""
        return self.config.hr.width, self.config.hr.height

    @property
    def closed(self) -> bool:
        return self._closed

    def _start(self, coro: Awaitable[None], what: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}-{what}")  # type: ignore[arg-type]
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("%s: %s failed", self.name, task.get_name(), exc_info=error)
        self.fail(f"{type(error).__name__}: {error}")

    def fail(self, reason: str) -> None:
        """Something the session cannot go on without failed: a stage (above), or a part its owner
        runs for it (a microphone's decoding). `failed()` then answers with the first reason; what
        follows is consequence."""
        if self.failure is None:
            self.failure = reason
            self._failed.set()

    async def failed(self) -> str:
        """Wait until a part of the session fails (a stage raised: out of memory, NaN output, ...)
        and say why. The session then makes no more new frames: its owner should tell its client
        and close it; other sessions are not affected."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(f"{self.name} is closed")

    # ----- the caller's interface ---------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, pts: int | None = None) -> int:
        """Add 16 kHz mono audio (float in [-1, 1], or int16) at pts (samples since the session
        started; None = right after the previous piece). Returns the pts it was stored at."""
        self._check_open()
        return self.input.push(pcm, pts)

    def producer_clock(self) -> ProducerClock:
        """For one live producer (a microphone, a WebRTC track): places its pieces by its own
        clock (placement.py), so a stall of the event loop never moves its audio."""
        rate = self.timeline.rate
        return ProducerClock(rate, round(self.options.max_audio_lag_ms * rate / 1000))

    def push_live_audio(
        self,
        pcm: np.ndarray,
        producer: ProducerClock,
        media_start: int | None = None,
        media_time_base: Fraction | None = None,
    ) -> int:
        """push_audio for a live producer's piece, placed by `producer` (from producer_clock());
        media_start x media_time_base: the piece's time on the producer's clock, when it has one.
        (push_audio without pts keeps its own rule: an API caller such as a TTS may push far ahead
        of the clock, which a live producer never does and ProducerClock drops.)"""
        self._check_open()
        clock_pts = self.timeline.arriving_pts(self.clock.now())
        return self.input.push(pcm, producer.place(len(pcm), clock_pts, media_start, media_time_base))

    def frames(self) -> AsyncIterator[VideoFrame]:
        """The video, one frame per 1/25 s at its due time, until the session closes."""
        return self.output.frames(lambda: self.pipeline.generation)

    def audio_out(self) -> AsyncIterator[AudioChunk]:
        """The input audio delayed by D, in 20 ms pieces at their due time (silence where none came)."""
        return self.output.audio_out(self.input.read)

    def interrupt(self) -> None:
        """Barge-in: drop queued audio and unrendered segments; idle frames follow within one segment."""
        self._check_open()
        generation = self.pipeline.new_generation()
        restart = self.pipeline.first_on_time(self.config.segment_video_frames)
        self.output.store.drop_from(restart * self.config.segment_video_frames, generation)
        self.input.restart(restart)
        self.input.schedule(restart, generation, self.pipeline.submit)
        log.info("%s: interrupted; generation %d starts at segment %d", self.name, generation, restart)

    async def set_reference(self, image: Tensor) -> None:
        """Animate another picture (uint8 [3, H, W]) from the next segment on."""
        self._check_open()
        await self.pipeline.set_reference(image)
        self.output.reference_frame = fitted_frame(image, self.config.hr.width, self.config.hr.height)
        log.info("%s: new reference picture", self.name)

    def set_text(self, text: str | None) -> None:
        """Condition both generators on another prompt (None or "" = no text) from the next segment."""
        self.pipeline.set_text(text)

    def snapshot(self) -> SessionStats:
        s, policy = self.stats, self.output.policy
        return SessionStats(
            frames_out=s.frames_out,
            fps_out=s.fps(),
            target_delay_ms=self.delay * 1000,
            added_latency_ms=s.latency_ms(),
            fallbacks=dict(s.fallbacks),
            late_frames=s.late_frames,
            skipped_segments=s.skipped_segments,
            refine_dropped=s.refine_dropped,
            consumer_skipped=s.consumer_skipped,
            audio_skipped=s.audio_skipped,
            degrade_level=policy.level,
            degrade_changes=policy.changes,
            lr_steps=policy.quality.lr_steps,
            refiner=policy.quality.refine,
            av_offset_ms=s.av_offset_ms(),
            stage_ms=s.stage_ms(),
            speech=self.input.speech,
            generation=self.generation,
            audio_pushed_s=s.audio_pushed / self.timeline.rate,
        )

    async def close(self) -> None:
        """Stop every task and worker thread of the session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        tasks = [self._stages, *self.input.tasks(), *self.output.close()]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), CLOSE_TIMEOUT_S)
        await self.pipeline.close(CLOSE_TIMEOUT_S)
        log.info("%s: closed after %d frames", self.name, self.stats.frames_out)


def fitted_frame(image: Tensor, width: int, height: int) -> np.ndarray:
    """A reference picture at the output size, uint8 [H, W, 3]: shown until the first segment is ready."""
    fitted = fit_image(image, width, height)
    return np.ascontiguousarray((fitted.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
