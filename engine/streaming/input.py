"""A session's input: audio in on its pts axis, the VAD gate, the audio features, and the plan of
segments handed to the stage pipeline.

The scheduler runs a segment once its audio window (lookahead included) has arrived, or when that
audio is overdue (then what is missing is silence): so silence and a muted microphone produce idle
frames from the same model, never a frozen picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from engine.audio.stream import AudioFeatureStream
from engine.audio.vad import VadGate
from engine.generation.segments import segment
from engine.parts import Parts
from engine.streaming.audio_in import AudioInput, AudioInputError
from engine.streaming.clock import Clock
from engine.streaming.options import SessionOptions
from engine.streaming.pacing import Timeline
from engine.streaming.pipeline import Job
from engine.streaming.stats import StatsCollector
from engine.streaming.worker import Handoff


class SessionInput:
    """Owns the input audio (AudioInput), the VAD, the feature stream and the segment scheduler."""

    def __init__(
        self,
        parts: Parts,
        clock: Clock,
        timeline: Timeline,
        options: SessionOptions,
        stats: StatsCollector,
        start: Callable[[Awaitable[None], str], asyncio.Task],
    ) -> None:
        cfg = parts.config
        self.parts, self.config, self.clock, self.timeline = parts, cfg, clock, timeline
        self.options, self.stats, self._start = options, stats, start
        self.rate, self.spf = cfg.time.sample_rate, cfg.time.samples_per_frame
        self.audio = AudioInput(max_ahead_samples=round(options.max_audio_ahead_s * self.rate))
        self._vad = VadGate(self.rate, options.vad_mode, options.vad_hangover_ms) if options.vad else None
        self._features = AudioFeatureStream(parts.audio, cfg)
        self._fed = 0  # audio pts fed to the features so far
        self._next_push = 0  # where audio pushed without pts goes
        self._arrived = asyncio.Event()
        self._scheduler: asyncio.Task | None = None

    @property
    def speech(self) -> bool:
        """The VAD hears speech now."""
        return bool(self._vad and self._vad.speech)

    # ----- audio in -----------------------------------------------------------------------------
    def push(self, pcm: np.ndarray, pts: int | None = None) -> int:
        """Add 16 kHz mono audio (float in [-1, 1], or int16) at pts (samples since the session
        started; None = right after the previous piece). Returns the pts it was stored at."""
        samples = np.asarray(pcm)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise AudioInputError(
                f"audio must be 1-D float (or int16) mono samples, got {samples.dtype} {samples.shape}"
            )
        if not np.all(np.isfinite(samples)):
            raise AudioInputError("audio contains NaN or infinite samples")
        now = self.clock.now()
        clock_pts = self.timeline.arriving_pts(now)
        if pts is None:
            pts = self._next_push
            if pts < clock_pts - self.options.max_audio_lag_ms * self.rate / 1000:
                pts = clock_pts  # the producer paused: resume at the clock, the gap is silence
        self.audio.push(samples, pts, now, clock_pts)
        self._next_push = max(self._next_push, pts + len(samples))
        self.stats.audio_pushed += len(samples)
        self._arrived.set()
        return pts

    def read(self, start: int, stop: int) -> np.ndarray:
        """Input samples [start, stop) (silence where none came): what the delayed output plays."""
        return self.audio.read(start, stop)

    # ----- the segment plan ---------------------------------------------------------------------
    def schedule(self, first: int, generation: int, submit: Callable[[Job], Awaitable[None]]) -> None:
        """(Re)start planning segments first, first + 1, ... of `generation`, each handed to `submit`."""
        if self._scheduler is not None:
            self._scheduler.cancel()
        self._scheduler = self._start(self._plan(first, generation, submit), "scheduler")

    async def _plan(self, first: int, generation: int, submit: Callable[[Job], Awaitable[None]]) -> None:
        grace = self.options.audio_grace_ms / 1000
        index = first
        while True:
            seg = segment(index, self.config)
            await self._wait_audio(seg.audio_stop, self.timeline.t0 + seg.audio_stop / self.rate + grace)
            self._feed(seg.audio_stop)
            heard_stop = min(seg.audio_stop, self.audio.end)  # less: it runs at its deadline without the rest
            job = Job(
                seg=seg,
                audio=Handoff.make(self._features.windows(seg), self.parts.device),
                generation=generation,
                audio_ready=self.clock.now(),
                heard=self.audio.arrival(heard_stop - 1) if heard_stop > seg.audio_start else None,
                heard_stop=heard_stop,
            )
            self._release_audio()
            await submit(job)
            index += 1

    async def _wait_audio(self, stop: int, deadline: float) -> None:
        """Until audio up to `stop` is in, or the clock reaches `deadline`."""
        while self.audio.end < stop and self.clock.now() < deadline:
            self._arrived.clear()
            waits = [
                asyncio.ensure_future(self._arrived.wait()),
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

    def _release_audio(self) -> None:
        # Keep what the delayed output still plays and what a re-planned segment's window may read.
        cfg = self.config
        playing = self.timeline.playing_pts(self.clock.now())
        context = (
            cfg.segment.motion_latents * cfg.time.vae_temporal_stride + cfg.audio.left_context_frames
        ) * self.spf
        self.audio.release(min(self._fed, playing - context - cfg.segment_video_frames * self.spf))

    def restart(self, first: int) -> None:
        """Interrupt: the audio not yet played becomes silence, new audio starts at the clock, and
        the features restart where segment `first` needs them (call `schedule` next)."""
        now = self.clock.now()
        playing = max(0, self.timeline.playing_pts(now))
        arriving = max(playing, self.timeline.arriving_pts(now))
        self.audio.silence_from(max(playing, self.audio.base), arriving)
        self._next_push = arriving
        seg = segment(first, self.config)
        start_frame = max(0, seg.audio_first_frame - self.config.audio.left_context_frames)
        self._features = AudioFeatureStream(self.parts.audio, self.config, start_frame=start_frame)
        self._fed = start_frame * self.spf

    def tasks(self) -> list[asyncio.Task]:
        return [] if self._scheduler is None else [self._scheduler]
