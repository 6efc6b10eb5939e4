"""output.py's frame store: refined frames replace LR ones, late frames are counted, an interrupt
forgets what the old generation made; its delayed audio catches up after a short stall and skips
only after a long one."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import torch

from engine.frames import FrameSource, StageTimes
from engine.generation.segments import segment
from engine.streaming.output import AUDIO_CATCH_UP_S, FrameStore, SessionOutput
from engine.streaming.pacing import DegradePolicy, Timeline
from engine.streaming.pipeline import Job, Ready
from engine.streaming.stats import StatsCollector
from engine.streaming.worker import Handoff
from tests.factories import micro_config

MICRO = micro_config()


def _ready(index: int, source: FrameSource, generation: int = 0, value: int = 0) -> Ready:
    seg = segment(index, MICRO)
    job = Job(seg, Handoff.make(torch.zeros(1), torch.device("cpu")), generation, 0.0, None)
    images = torch.full((seg.output_frames, 2, 2, 3), value, dtype=torch.uint8)
    return Ready(job, images, source, StageTimes(audio_ready=0.0))


def test_refined_frames_replace_low_res_ones_and_late_ones_are_counted() -> None:
    store, n = FrameStore(), MICRO.segment_video_frames
    assert store.put(_ready(0, FrameSource.LOW_RES, value=1)) == 0
    assert store.put(_ready(0, FrameSource.REFINED, value=2)) == 0
    assert store.put(_ready(0, FrameSource.LOW_RES, value=3)) == 0  # an LR frame never replaces a refined one
    ready, i = store.take(0)
    assert ready.source is FrameSource.REFINED and int(ready.images[i].max()) == 2
    assert store.take(2) is not None and len(store) == n - 3  # frame 1 was skipped and forgotten
    assert store.put(_ready(0, FrameSource.REFINED)) == 3  # pts 0..2 are past: late


def test_an_interrupt_forgets_the_old_generation_from_its_restart() -> None:
    store, n = FrameStore(), MICRO.segment_video_frames
    store.put(_ready(0, FrameSource.LOW_RES))
    store.put(_ready(1, FrameSource.LOW_RES))
    store.drop_from(n, generation=1)
    assert len(store) == n  # segment 0 stays, segment 1 is gone
    store.put(_ready(1, FrameSource.LOW_RES, generation=1, value=7))
    ready, i = store.take(n)
    assert ready.job.generation == 1 and int(ready.images[i].max()) == 7


class StallingClock:
    """A clock whose sleeps wake on time, except those given: (wake at or after, seconds late)."""

    def __init__(self, stalls: list[tuple[float, float]]) -> None:
        self._now, self.stalls = 0.0, stalls

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        self._now = max(self._now, when)
        for at, late in list(self.stalls):
            if self._now >= at:
                self.stalls.remove((at, late))
                self._now += late
        await asyncio.sleep(0)


def _audio_out(stalls: list[tuple[float, float]], seconds: float) -> tuple[list, StatsCollector]:
    """(when handed, piece) of `seconds` of a session's delayed audio, on a StallingClock."""
    clock, stats = StallingClock(stalls), StatsCollector()
    timeline = Timeline(t0=0.0, delay=0.5, fps=25, rate=16_000)
    output = SessionOutput(clock, timeline, 4, 640, np.zeros((2, 2, 3), np.uint8), DegradePolicy(1), stats)

    async def collect() -> list:
        pieces = []
        async for piece in output.audio_out(lambda start, stop: np.zeros(stop - start, np.float32)):
            pieces.append((clock.now(), piece))
            if piece.due >= timeline.sample_due(round(seconds * 16_000)):
                return pieces
        return pieces

    return asyncio.run(collect()), stats


def test_audio_that_fell_a_little_behind_is_handed_out_at_once_not_skipped() -> None:
    # The consumer is held 120 ms at 1.0 s: the six pieces due meanwhile come back to back.
    pieces, stats = _audio_out([(1.0, 0.12)], 2.0)
    pts = [p.pts for _, p in pieces]
    assert pts == list(range(0, pts[-1] + 1, 320)) and stats.audio_skipped == 0  # nothing missing
    handed = [t for t, _ in pieces]
    burst = [t for t, p in pieces if 1.0 <= p.due <= 1.12]
    assert len(burst) >= 6 and max(burst) - min(burst) < 0.001  # at once, when the stall ended
    assert all(t == p.due for t, p in pieces if p.due > 1.14) and handed == sorted(handed)  # on time again


def test_audio_that_fell_far_behind_skips_to_the_piece_due_now_and_counts_what_it_skipped() -> None:
    pieces, stats = _audio_out([(1.0, 3 * AUDIO_CATCH_UP_S)], 2.5)
    gaps = [b.pts - a.pts for (_, a), (_, b) in itertools.pairwise(pieces)]
    skipped = [g // 320 - 1 for g in gaps if g != 320]
    assert len(skipped) == 1 and skipped[0] == stats.audio_skipped >= 3 * AUDIO_CATCH_UP_S / 0.02 - 1
    late = [t - p.due for t, p in pieces]
    assert max(late) < 0.02 + 1e-9  # the delay stays bounded: each piece within a piece of its time
