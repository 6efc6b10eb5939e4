"""A live session: audio in, frames at exactly 25 fps and the audio delayed to match, out.

    push_audio -> AudioInput --scheduler: VAD gate, audio features, segment plan--> [queue: 1]
      -> low-res worker (CUDA stream A | a CPU thread): LowResStage, LR frames published
         as the fallback ----------------------------------------------------------> [queue: 1]
      -> refine worker (stream B | a thread): RefineStage, refined frames published
      -> FrameStore -> frames(): the pacer, frame n at t0 + D + n / 25
    AudioInput -> audio_out(): sample s at t0 + D + s / 16000 (the same schedule)

The scheduler runs a segment once its audio window (lookahead included) has
arrived, or when that audio is overdue (then what is missing is silence): so
silence and a muted microphone produce idle frames from the same model, never
a frozen picture. The queues hold one segment each: while the refine worker
works on segment n, the LR worker generates segment n + 1. A segment that can
no longer be on time is skipped, and a frame that is not ready when due is
replaced (the upsampled LR frame, else the previous frame): the delay never
grows. Control skips ahead of data: `interrupt()` drops queued audio and
unrendered segments and plans idle segments from the first one that can still
be on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.audio.stream import AudioFeatureStream
from engine.audio.vad import VadGate
from engine.exceptions import EngineError
from engine.frames import AudioChunk, FrameSource, StageTimes, VideoFrame
from engine.media.image import fit_image
from engine.models.text import tokenize
from engine.parts import Parts
from engine.streaming.audio_in import AudioInput, AudioInputError
from engine.streaming.clock import Clock
from engine.streaming.pacing import DegradePolicy, Quality
from engine.streaming.segments import Segment, segment
from engine.streaming.stages import (
    DecodedLowRes,
    GenerationSettings,
    LowResStage,
    Reference,
    RefineStage,
)
from engine.streaming.stats import SessionStats, StatsCollector
from engine.streaming.worker import Handoff, Worker

log = logging.getLogger(__name__)

AUDIO_CHUNK_MS = 20  # audio_out() hands out pieces of this length
CLOSE_TIMEOUT_S = 10.0

StageWrapper = Callable[[str, Callable[..., Any]], Callable[..., Any]]
"""wrap(stage name, fn) -> fn: instruments or slows a stage (benchmarks and tests)."""


class SessionClosedError(EngineError):
    """The session was closed."""


@dataclass(frozen=True)
class SessionOptions:
    target_delay_ms: float | None = None  # D; None = from the engine's measured stage times
    lr_steps: int | None = None  # LR-A2V Euler steps per segment (default: the config's)
    seed: int = 0  # noise seed of both stages
    vad: bool = True  # the model hears only what the VAD calls speech (noise never moves the mouth)
    vad_mode: int = 2  # WebRTC VAD aggressiveness 0..3
    vad_hangover_ms: int = 300  # speech continues this long after the last voiced 20 ms
    audio_grace_ms: float = 40.0  # a segment waits this long past its audio's due time for late packets
    jitter_ms: float = 60.0  # margin added to an automatic delay
    delay_safety: float = 1.5  # x the measured compute, in an automatic delay
    degrade: bool = True  # degrade quality when frames miss their due time
    max_audio_lag_ms: float = 200.0  # audio pushed without pts this far behind the clock restarts at now
    max_audio_ahead_s: float = 120.0  # audio may be pushed at most this far ahead of the clock (TTS)


@dataclass(frozen=True)
class _Job:
    seg: Segment
    audio: Handoff  # [1, M + N, A, D] windows, made on the loop's stream (on CUDA: the default one)
    generation: int
    audio_ready: float  # when the window was complete or overdue
    heard: float | None  # arrival of the last sample the segment depends on (None: never arrived)
    quality: Quality | None = None  # set when the LR worker takes it


@dataclass(frozen=True)
class _Ready:
    """Frames of one segment, published for the pacer."""

    job: _Job
    images: Tensor  # uint8 [T, H, W, 3]
    source: FrameSource
    times: StageTimes


class FrameStore:
    """Frames ready for the pacer, by pts; a refined frame replaces the LR one of the same pts."""

    def __init__(self) -> None:
        self._frames: dict[int, tuple[_Ready, int]] = {}  # pts -> (segment frames, index)
        self.next_pts = 0  # the pacer's next frame: anything earlier is late

    def put(self, ready: _Ready) -> int:
        """Publish a segment's frames; returns how many came too late to be shown."""
        late = 0
        for i in range(ready.job.seg.output_frames):
            pts = ready.job.seg.first_frame + i
            if pts < self.next_pts:
                late += 1
                continue
            current = self._frames.get(pts)
            if (
                current is None
                or ready.source is FrameSource.REFINED
                or current[0].job.generation < ready.job.generation
            ):
                self._frames[pts] = (ready, i)
        return late

    def take(self, pts: int) -> tuple[_Ready, int] | None:
        """The frame for pts (and forget everything before it)."""
        for old in [p for p in self._frames if p < pts]:
            del self._frames[old]
        self.next_pts = pts + 1
        return self._frames.pop(pts, None)

    def drop_from(self, pts: int, generation: int) -> None:
        """Interrupt: forget frames at or after pts made before `generation`."""
        for p in [p for p, (r, _) in self._frames.items() if p >= pts and r.job.generation < generation]:
            del self._frames[p]

    def __len__(self) -> int:
        return len(self._frames)


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
        self.fps, self.rate = cfg.time.fps, cfg.time.sample_rate
        self.spf = cfg.time.samples_per_frame
        self.seg_frames = cfg.segment_video_frames
        self.delay = delay_s
        self.t0 = clock.now()
        settings = GenerationSettings.from_config(
            cfg, lr_steps=options.lr_steps, seed=options.seed, text=text
        )
        self._low = LowResStage(parts, reference, settings)
        self._refine = RefineStage(parts, reference, settings)
        wrap = wrap or (lambda _name, fn: fn)
        self._run_low_res = wrap("low_res", self._low_res_fn)
        self._run_refine = wrap("refine", self._refine_fn)
        self._lr_worker = Worker(f"{name}-low-res", parts.device)
        self._refine_worker = Worker(f"{name}-refine", parts.device)
        self._reference_frame = reference_frame
        self.audio = AudioInput(max_ahead_samples=round(options.max_audio_ahead_s * self.rate))
        self._vad = VadGate(self.rate, options.vad_mode, options.vad_hangover_ms) if options.vad else None
        self._features = AudioFeatureStream(parts.audio, cfg)
        self._fed = 0  # audio pts fed to the features so far
        self._next_push = 0  # where audio pushed without pts goes
        self._audio_arrived = asyncio.Event()
        self._store = FrameStore()
        self.policy = DegradePolicy(settings.lr_steps, enabled=options.degrade)
        self.stats = StatsCollector()
        # Seconds of one segment in the low-res stage and in both stages, updated as measured.
        self._estimate_low_res, self._estimate = compute_estimate_s
        self.generation = 0
        self._next_segment = 0  # the next segment index the scheduler plans
        self._lr_queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=1)
        self._refine_queue: asyncio.Queue[tuple[_Job, Handoff, StageTimes]] = asyncio.Queue(maxsize=1)
        self._closed = False
        self._sleepers: set[asyncio.Task] = set()
        self._scheduler = self._start(self._schedule(0), "scheduler")
        self._tasks = [
            self._start(self._low_res_loop(), "low-res"),
            self._start(self._refine_loop(), "refine"),
        ]
        log.info("%s: started with delay %.0f ms", name, delay_s * 1000)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames the session makes."""
        return self.config.hr.width, self.config.hr.height

    # ----- clock arithmetic ---------------------------------------------------------------------
    def frame_due(self, pts: int) -> float:
        return self.t0 + self.delay + pts / self.fps

    def sample_due(self, pts: int) -> float:
        return self.t0 + self.delay + pts / self.rate

    def _clock_pts(self) -> int:
        """The audio pts that is arriving now, if audio flows in real time."""
        return max(0, math.floor((self.clock.now() - self.t0) * self.rate))

    # ----- input --------------------------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, pts: int | None = None) -> int:
        """Add 16 kHz mono audio (float in [-1, 1], or int16) at pts (samples since the session
        started; None = right after the previous piece). Returns the pts it was stored at."""
        if self._closed:
            raise SessionClosedError(f"{self.name} is closed")
        samples = np.asarray(pcm)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise AudioInputError(
                f"audio must be 1-D float (or int16) mono samples, got {samples.dtype} {samples.shape}"
            )
        if not np.all(np.isfinite(samples)):
            raise AudioInputError("audio contains NaN or infinite samples")
        clock_pts = self._clock_pts()
        if pts is None:
            pts = self._next_push
            if pts < clock_pts - self.options.max_audio_lag_ms * self.rate / 1000:
                pts = clock_pts  # the producer paused: resume at the clock, the gap is silence
        self.audio.push(samples, pts, self.clock.now(), clock_pts)
        self._next_push = max(self._next_push, pts + len(samples))
        self.stats.audio_pushed += len(samples)
        self._audio_arrived.set()
        return pts

    # ----- scheduler ----------------------------------------------------------------------------
    def _start(self, coro: Any, what: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}-{what}")
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: %s failed", self.name, task.get_name(), exc_info=task.exception())

    async def _wait_audio(self, stop: int, deadline: float) -> None:
        """Until audio up to `stop` is in, or the clock reaches `deadline`."""
        while self.audio.end < stop and self.clock.now() < deadline:
            self._audio_arrived.clear()
            waits = [
                asyncio.ensure_future(self._audio_arrived.wait()),
                asyncio.ensure_future(self.clock.sleep_until(deadline)),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    def _feed(self, stop: int) -> None:
        """Input audio [fed, stop) -> VAD gate -> audio features."""
        if stop <= self._fed:
            return
        samples = self.audio.read(self._fed, stop)
        if self._vad is not None:
            samples = self._vad.process(samples)  # stop - fed is a whole number of 20 ms frames
        self._features.push(samples)
        self._fed = stop

    async def _schedule(self, first: int) -> None:
        grace = self.options.audio_grace_ms / 1000
        index = first
        while True:
            seg = segment(index, self.config)
            self._next_segment = index + 1
            await self._wait_audio(seg.audio_stop, self.t0 + seg.audio_stop / self.rate + grace)
            self._feed(seg.audio_stop)
            windows = self._features.windows(seg)
            job = _Job(
                seg=seg,
                audio=Handoff.make(windows, self.parts.device),
                generation=self.generation,
                audio_ready=self.clock.now(),
                heard=self.audio.arrival(seg.audio_stop - 1),
            )
            self._release_audio()
            if self._too_late(seg):
                self.stats.skipped_segments += 1
            else:
                await self._lr_queue.put(job)
            index += 1

    def _too_late(self, seg: Segment) -> bool:
        """Even started now, the segment's last LR frame would miss its due time."""
        last = self.frame_due(seg.first_frame + seg.output_frames - 1)
        return self.clock.now() + self._estimate_low_res > last

    def _release_audio(self) -> None:
        # Keep what the delayed output still plays and what a re-planned segment's window may read.
        playing = math.floor((self.clock.now() - self.t0 - self.delay) * self.rate)
        context = (
            self.config.segment.motion_latents * self.config.time.vae_temporal_stride
            + self.config.audio.left_context_frames
        ) * self.spf
        self.audio.release(min(self._fed, playing - context - self.seg_frames * self.spf))

    # ----- stage loops --------------------------------------------------------------------------
    def _low_res_fn(self, job: _Job) -> tuple[Handoff, Tensor]:
        assert job.quality is not None
        audio = job.audio.take(job.audio.value)  # ordered after the stream that computed it
        decoded = self._low.run(job.seg, audio, job.quality.lr_steps)
        preview = decoded.preview(self.config.hr.width, self.config.hr.height)
        return Handoff.make(decoded, self.parts.device), preview

    def _refine_fn(self, handoff: Handoff) -> Tensor:
        decoded: DecodedLowRes = handoff.take(handoff.value.latents, handoff.value.keypoints)
        return self._refine.run(decoded)

    def _stale(self, job: _Job) -> bool:
        return job.generation != self.generation

    async def _low_res_loop(self) -> None:
        while True:
            job = await self._lr_queue.get()
            if self._stale(job):
                continue
            if self._too_late(job.seg):
                self.stats.skipped_segments += 1
                continue
            job = replace(job, quality=self.policy.quality)
            start = self.clock.now()
            handoff, preview = await self.clock.compute(self._lr_worker, "low_res", self._run_low_res, job)
            end = self.clock.now()
            self.stats.stage("low_res", end - start)
            self._estimate_low_res = 0.8 * self._estimate_low_res + 0.2 * (end - start)
            if self._stale(job):
                continue
            times = StageTimes(audio_ready=job.audio_ready, low_res_start=start, low_res_end=end)
            self._publish(_Ready(job, preview, FrameSource.LOW_RES, times))
            assert job.quality is not None
            if job.quality.refine:
                # Never wait for a busy refiner (the LR frames would be late too): a segment still
                # queued for refining is dropped for this newer one, and shows its LR frames.
                if self._refine_queue.full():
                    self._refine_queue.get_nowait()
                    self.stats.refine_dropped += 1
                self._refine_queue.put_nowait((job, handoff, times))
            else:
                self._estimate = 0.8 * self._estimate + 0.2 * (end - start)

    async def _refine_loop(self) -> None:
        while True:
            job, handoff, times = await self._refine_queue.get()
            if self._stale(job):
                continue
            start = self.clock.now()
            refined = await self.clock.compute(self._refine_worker, "refine", self._run_refine, handoff)
            end = self.clock.now()
            self.stats.stage("refine", end - start)
            low_res = (times.low_res_end or start) - (times.low_res_start or start)
            self._estimate = 0.8 * self._estimate + 0.2 * (low_res + end - start)
            if not self._stale(job):
                self._publish(_Ready(job, refined, FrameSource.REFINED, replace(times, refine_end=end)))

    def _publish(self, ready: _Ready) -> None:
        self.stats.late_frames += self._store.put(ready)

    # ----- outputs ------------------------------------------------------------------------------
    async def _sleep_until(self, when: float) -> bool:
        """Sleep on the session clock; False when the session closed meanwhile."""
        if self._closed:
            return False
        task = asyncio.ensure_future(self.clock.sleep_until(when))
        self._sleepers.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if self._closed and task.cancelled():
                return False
            raise
        finally:
            self._sleepers.discard(task)
        return not self._closed

    async def frames(self) -> AsyncIterator[VideoFrame]:
        """The video, one frame per 1/25 s at its due time, until the session closes."""
        pts = 0
        previous: np.ndarray = self._reference_frame
        previous_source = FrameSource.REFERENCE
        missed = False
        while await self._sleep_until(self.frame_due(pts)):
            now = self.clock.now()
            behind = math.floor((now - self.frame_due(pts)) * self.fps)
            if behind > 0:  # the consumer was too slow: skip to the frame due now
                self.stats.consumer_skipped += behind
                pts += behind
            entry = self._store.take(pts)
            if entry is None:
                image, source, missed = previous, FrameSource.REPEAT, True
                if previous_source is FrameSource.REFERENCE:
                    source = FrameSource.REFERENCE
                seg_start = pts - pts % self.seg_frames
                frame = VideoFrame(
                    pts=pts,
                    image=image,
                    source=source,
                    audio_start=seg_start * self.spf,
                    audio_stop=(seg_start + self.seg_frames) * self.spf,
                    generation=self.generation,
                    times=StageTimes(audio_ready=now, emitted=now),
                    due=self.frame_due(pts),
                )
                self.stats.frame(source, now, None, FrameSource.REFINED)
            else:
                ready, i = entry
                image, source = ready.images[i].numpy(), ready.source
                expected = (
                    FrameSource.REFINED
                    if ready.job.quality and ready.job.quality.refine
                    else FrameSource.LOW_RES
                )
                missed = missed or source is not expected
                heard = ready.job.heard if ready.job.heard is not None else ready.job.audio_ready
                frame = VideoFrame(
                    pts=pts,
                    image=image,
                    source=source,
                    audio_start=ready.job.seg.audio_start,
                    audio_stop=ready.job.seg.audio_stop,
                    generation=ready.job.generation,
                    times=replace(ready.times, emitted=now),
                    due=self.frame_due(pts),
                )
                self.stats.frame(source, now, now - heard, expected)
            previous, previous_source = image, source
            self.stats.video_clock_offset = now - pts / self.fps
            if (pts + 1) % self.seg_frames == 0:
                self.policy.end_of_segment(missed)
                missed = False
            yield frame
            pts += 1

    async def audio_out(self) -> AsyncIterator[AudioChunk]:
        """The input audio delayed by D, in 20 ms pieces at their due time (silence where none came)."""
        chunk = self.rate * AUDIO_CHUNK_MS // 1000
        pts = 0
        while await self._sleep_until(self.sample_due(pts)):
            now = self.clock.now()
            behind = math.floor((now - self.sample_due(pts)) * self.rate) // chunk * chunk
            pts += max(0, behind)
            self.stats.audio_clock_offset = now - pts / self.rate
            yield AudioChunk(pts=pts, samples=self.audio.read(pts, pts + chunk), due=self.sample_due(pts))
            pts += chunk

    # ----- control ------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Barge-in: drop queued audio and unrendered segments; idle frames follow within one segment."""
        if self._closed:
            raise SessionClosedError(f"{self.name} is closed")
        now = self.clock.now()
        self.generation += 1
        playing = max(0, math.floor((now - self.t0 - self.delay) * self.rate))
        arriving = max(playing, self._clock_pts())
        self.audio.silence_from(max(playing, self.audio.base), arriving)
        self._next_push = arriving
        # The first segment that can still be on time starts the new generation.
        first_on_time = math.ceil((now + self._estimate - self.t0 - self.delay) * self.fps / self.seg_frames)
        restart = max(0, first_on_time)
        for q in (self._lr_queue, self._refine_queue):
            while not q.empty():
                q.get_nowait()
        self._store.drop_from(restart * self.seg_frames, self.generation)
        self._scheduler.cancel()
        first = segment(restart, self.config)
        start_frame = max(0, first.context_first_frame - self.config.audio.left_context_frames)
        self._features = AudioFeatureStream(self.parts.audio, self.config, start_frame=start_frame)
        self._fed = start_frame * self.spf
        self._scheduler = self._start(self._schedule(restart), "scheduler")
        log.info("%s: interrupted; generation %d starts at segment %d", self.name, self.generation, restart)

    async def set_reference(self, image: Tensor) -> None:
        """Animate another picture (uint8 [3, H, W]) from the next segment on."""
        if self._closed:
            raise SessionClosedError(f"{self.name} is closed")
        encode = Reference.encode
        reference = await self.clock.compute(self._lr_worker, "reference", encode, self.parts, image)
        self._low.prefix, self._refine.prefix = reference.lr_prefix, reference.hr_prefix
        self._reference_frame = fitted_frame(image, self.config.hr.width, self.config.hr.height)
        log.info("%s: new reference picture", self.name)

    def set_text(self, text: str | None) -> None:
        """Condition both generators on another prompt (None or "" = no text) from the next segment."""
        tokens = tokenize([text], self.config.text, self.parts.device)
        self._low.text, self._refine.text = tokens, tokens

    def snapshot(self) -> SessionStats:
        s = self.stats
        q = self.policy.quality
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
            degrade_level=self.policy.level,
            degrade_changes=self.policy.changes,
            lr_steps=q.lr_steps,
            refiner=q.refine,
            av_offset_ms=s.av_offset_ms(),
            stage_ms=s.stage_ms(),
            speech=bool(self._vad and self._vad.speech),
            generation=self.generation,
            audio_pushed_s=s.audio_pushed / self.rate,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop every task and worker thread of the session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        tasks = [self._scheduler, *self._tasks, *self._sleepers]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), CLOSE_TIMEOUT_S)
        await self._lr_worker.close(CLOSE_TIMEOUT_S)
        await self._refine_worker.close(CLOSE_TIMEOUT_S)
        log.info("%s: closed after %d frames", self.name, self.stats.frames_out)


def fitted_frame(image: Tensor, width: int, height: int) -> np.ndarray:
    """A reference picture at the output size, uint8 [H, W, 3]: shown until the first segment is ready."""
    fitted = fit_image(image, width, height)
    return np.ascontiguousarray((fitted.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
