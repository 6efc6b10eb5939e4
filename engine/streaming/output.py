"""A session's output: the frames the stages publish, the pacer that shows one every 1/25 s at its
due time, the delayed audio, and the degrade feedback.

A frame that is not ready when due is replaced (the upsampled LR frame when the refined one is
missing, else the previous frame): the pacer never waits, so the delay never grows. Each segment's
misses are fed to the degrade policy, whose quality the stage pipeline reads for its next segment.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import numpy as np

from engine.frames import AudioChunk, FrameSource, StageTimes, VideoFrame
from engine.streaming.clock import Clock
from engine.streaming.pacing import DegradePolicy, Quality, Timeline
from engine.streaming.pipeline import Ready
from engine.streaming.stats import StatsCollector

AUDIO_CHUNK_MS = 20  # audio_out() hands out pieces of this length
# Audio whose consumer fell behind by less than this is handed out late, the pieces back to back:
# the receiver's jitter buffer plays them on, where a skipped piece is a click. Only further behind
# is audio skipped, to keep the delay bounded. (A late video frame, in turn, is worth nothing: the
# pacer skips to the frame due now.)
AUDIO_CATCH_UP_S = 0.25


class FrameStore:
    """Frames ready for the pacer, by pts; a refined frame replaces the LR one of the same pts."""

    def __init__(self) -> None:
        self._frames: dict[int, tuple[Ready, int]] = {}  # pts -> (segment frames, index)
        self.next_pts = 0  # the pacer's next frame: anything earlier is late

    def put(self, ready: Ready) -> int:
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

    def take(self, pts: int) -> tuple[Ready, int] | None:
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


class SessionOutput:
    """Owns the frame store, the pacer, the delayed audio and the degrade policy."""

    def __init__(
        self,
        clock: Clock,
        timeline: Timeline,
        seg_frames: int,
        samples_per_frame: int,
        reference_frame: np.ndarray,
        policy: DegradePolicy,
        stats: StatsCollector,
    ) -> None:
        self.clock, self.timeline, self.stats, self.policy = clock, timeline, stats, policy
        self.seg_frames, self.spf = seg_frames, samples_per_frame
        self.reference_frame = reference_frame  # shown until the first segment is ready
        self.store = FrameStore()
        self.closed = False
        self._sleepers: set[asyncio.Task] = set()

    @property
    def quality(self) -> Quality:
        return self.policy.quality

    def publish(self, ready: Ready) -> None:
        self.stats.late_frames += self.store.put(ready)

    async def _sleep_until(self, when: float) -> bool:
        """Sleep on the session clock; False when the session closed meanwhile."""
        if self.closed:
            return False
        task = asyncio.ensure_future(self.clock.sleep_until(when))
        self._sleepers.add(task)
        try:
            await task
        except asyncio.CancelledError:
            if self.closed and task.cancelled():
                return False
            raise
        finally:
            self._sleepers.discard(task)
        return not self.closed

    def close(self) -> list[asyncio.Task]:
        """Stop the pacers; returns the sleeps to wait for."""
        self.closed = True
        return list(self._sleepers)

    def _missing(self, pts: int, previous: VideoFrame | None, now: float, generation: int) -> VideoFrame:
        """The frame shown when none is ready: the previous one again (the reference before any)."""
        reference = previous is None or previous.source is FrameSource.REFERENCE
        source = FrameSource.REFERENCE if reference else FrameSource.REPEAT
        seg_start = pts - pts % self.seg_frames
        self.stats.frame(source, now, None, FrameSource.REFINED)
        return VideoFrame(
            pts=pts,
            image=self.reference_frame if previous is None else previous.image,
            source=source,
            audio_start=seg_start * self.spf,
            audio_stop=(seg_start + self.seg_frames) * self.spf,
            audio_heard=0 if previous is None else previous.audio_heard,
            generation=generation,
            times=StageTimes(audio_ready=now, emitted=now),
            due=self.timeline.frame_due(pts),
        )

    def _ready(self, pts: int, ready: Ready, i: int, now: float) -> tuple[VideoFrame, bool]:
        """A published frame, and whether it is a fallback (LR where refined was planned)."""
        expected = (
            FrameSource.REFINED if ready.job.quality and ready.job.quality.refine else FrameSource.LOW_RES
        )
        heard = ready.job.heard if ready.job.heard is not None else ready.job.audio_ready
        self.stats.frame(ready.source, now, now - heard, expected)
        frame = VideoFrame(
            pts=pts,
            image=ready.images[i].numpy(),
            source=ready.source,
            audio_start=ready.job.seg.audio_start,
            audio_stop=ready.job.seg.audio_stop,
            audio_heard=ready.job.seg.audio_stop if ready.job.heard_stop is None else ready.job.heard_stop,
            generation=ready.job.generation,
            times=replace(ready.times, emitted=now),
            due=self.timeline.frame_due(pts),
        )
        return frame, ready.source is not expected

    async def frames(self, generation: Callable[[], int]) -> AsyncIterator[VideoFrame]:
        """The video, one frame per 1/25 s at its due time, until the session closes (`generation`:
        the current one, for the frames shown when none is ready)."""
        pts = 0
        previous: VideoFrame | None = None
        missed = False
        while await self._sleep_until(self.timeline.frame_due(pts)):
            now = self.clock.now()
            behind = math.floor((now - self.timeline.frame_due(pts)) * self.timeline.fps)
            if behind > 0:  # the consumer was too slow: skip to the frame due now
                self.stats.consumer_skipped += behind
                pts += behind
            entry = self.store.take(pts)
            if entry is None:
                frame = self._missing(pts, previous, now, generation())
                missed = True
            else:
                frame, fallback = self._ready(pts, *entry, now)
                missed = missed or fallback
            previous = frame
            self.stats.video_clock_offset = now - pts / self.timeline.fps
            if (pts + 1) % self.seg_frames == 0:
                self.policy.end_of_segment(missed)
                missed = False
            yield frame
            pts += 1

    async def audio_out(self, read: Callable[[int, int], np.ndarray]) -> AsyncIterator[AudioChunk]:
        """The input audio (`read(start, stop)`) delayed by D, in 20 ms pieces at their due time;
        a consumer that fell behind gets the pieces it missed at once, or beyond AUDIO_CATCH_UP_S
        the piece due now."""
        rate = self.timeline.rate
        chunk = rate * AUDIO_CHUNK_MS // 1000
        pts = 0
        while await self._sleep_until(self.timeline.sample_due(pts)):
            now = self.clock.now()
            if now - self.timeline.sample_due(pts) > AUDIO_CATCH_UP_S:
                behind = math.floor((now - self.timeline.sample_due(pts)) * rate) // chunk
                self.stats.audio_skipped += behind
                pts += behind * chunk
            self.stats.audio_clock_offset = now - pts / rate
            yield AudioChunk(pts=pts, samples=read(pts, pts + chunk), due=self.timeline.sample_due(pts))
            pts += chunk
