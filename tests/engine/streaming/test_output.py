"""output.py's frame store: refined frames replace LR ones, late frames are counted, an interrupt
forgets what the old generation made."""

from __future__ import annotations

import torch

from engine.frames import FrameSource, StageTimes
from engine.generation.segments import segment
from engine.streaming.output import FrameStore
from engine.streaming.pipeline import Job, Ready
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
