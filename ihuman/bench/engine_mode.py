"""`ihuman bench latency --mode engine`: one session in this process on the real clock.

Audio is pushed in 20 ms pieces at the times a microphone would deliver them; frames and the
delayed audio are consumed as a transport would. For every frame the report keeps when the last
audio sample it depends on arrived, when each stage started and ended, and when it was emitted.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable

import numpy as np
import torch

from engine.data.clip import make_clip
from engine.frames import FrameSource
from engine.streaming.engine import ComputeEstimate, Engine
from engine.streaming.playback import play
from engine.streaming.session import SessionOptions
from engine.streaming.stats import SessionStats
from ihuman.bench.machine import ProcessUsage
from ihuman.bench.timeline import frame_rate, stage_overlap, summary

REFERENCE_SEED = 11  # a procedural character; the picture does not change the speed


async def run_engine(
    engine: Engine,
    audio: np.ndarray,
    seconds: float,
    options: SessionOptions,
    usage: ProcessUsage,
    progress: Callable[[float], None] = lambda _: None,
) -> dict:
    """Measure `seconds` of a session fed `audio` (16 kHz mono, at least that long)."""
    cfg = engine.config
    rate = cfg.time.sample_rate
    reference = make_clip(REFERENCE_SEED, 1 / cfg.time.fps, cfg.hr.width, cfg.hr.height).frames[0]
    estimate = await engine.estimate()
    usage.start()
    opened = engine.clock.now()
    session = await engine.open_session(reference, options=options)
    samples_per_frame = rate // cfg.time.fps
    pushed_end: list[int] = []  # pts just past each piece pushed
    pushed_at: list[float] = []  # when it was pushed
    rows: list[dict] = []
    cold: list[float] = []  # the process's age when the first frame came out
    end = session.t0 + session.delay + seconds

    def pushed(end: int, when: float) -> None:
        pushed_end.append(end)
        pushed_at.append(when)

    def arrival(sample: int) -> float | None:
        """When the piece holding sample `sample - 1` was pushed (None: not yet)."""
        i = bisect.bisect_left(pushed_end, sample)
        return pushed_at[i] if i < len(pushed_at) else None

    async def video() -> None:
        async for frame in session.frames():
            if frame.due >= end:
                return
            now = engine.clock.now()
            heard = arrival(frame.audio_heard) if frame.audio_heard > 0 else None
            generated = frame.source in (FrameSource.REFINED, FrameSource.LOW_RES)
            spoken = arrival(frame.pts * samples_per_frame + 1) if generated else None
            times = frame.times
            if not cold:
                cold.append(usage.age_s() * 1000)
            rows.append(
                {
                    "frame": frame.pts,
                    "source": frame.source.value,
                    "emitted_s": now - opened,
                    "due_s": frame.due - opened,
                    "audio_heard": frame.audio_heard,
                    "audio_arrived_s": None if heard is None else heard - opened,
                    "latency_ms": None if heard is None else (now - heard) * 1000,
                    "moment_delay_ms": None if spoken is None else (now - spoken) * 1000,
                    "low_res_start_s": _since(times.low_res_start, opened),
                    "low_res_end_s": _since(times.low_res_end, opened),
                    "refine_start_s": _since(times.refine_start, opened),
                    "refine_end_s": _since(times.refine_end, opened),
                }
            )
            progress(min(1.0, (now - session.t0 - session.delay) / seconds))

    async def sound() -> None:
        async for chunk in session.audio_out():
            if chunk.due >= end:
                return

    producer = asyncio.create_task(play(session, engine.clock, audio, pushed))
    try:
        await asyncio.gather(video(), sound())
    finally:
        producer.cancel()
    stats = session.snapshot()
    await engine.close_session(session)
    report = engine_report(rows, stats, estimate, usage, engine.parts.device)
    report["first_frame_ms"]["cold"] = cold[0] if cold else None
    return report


def _since(t: float | None, origin: float) -> float | None:
    return None if t is None else t - origin


def engine_report(
    rows: list[dict],
    stats: SessionStats,
    estimate: ComputeEstimate,
    usage: ProcessUsage,
    device: torch.device,
) -> dict:
    generated = [r for r in rows if r["source"] != FrameSource.REFERENCE.value]
    first = generated[0] if generated else None
    sources = {s.value: sum(r["source"] == s.value for r in rows) for s in FrameSource}
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "added_latency_ms": summary([r["latency_ms"] for r in generated if r["latency_ms"] is not None]),
        "picture_delay_ms": summary([r["moment_delay_ms"] for r in rows if r["moment_delay_ms"] is not None]),
        "first_frame_ms": {
            "warm": rows[0]["emitted_s"] * 1000 if rows else None,  # session opened -> first frame out
            "cold": None,  # process start -> first frame out (run_engine fills it in)
            "warm_generated": first["emitted_s"] * 1000 if first else None,  # ... -> first answer to audio
        },
        "frame_rate": frame_rate([r["emitted_s"] for r in rows]),
        "frames": len(rows),
        "frames_by_source": sources,
        "fallback_rate": 1 - sources[FrameSource.REFINED.value] / max(len(rows), 1),
        "target_delay_ms": stats.target_delay_ms,
        "degrade_changes": stats.degrade_changes,
        "degrade_level_final": stats.degrade_level,
        "skipped_segments": stats.skipped_segments,
        "av_offset_ms": stats.av_offset_ms,
        "stage_ms": stats.stage_ms,
        "refine_hidden_fraction": stage_overlap(rows),
        "warm_up_stage_ms": {"low_res": estimate.low_res * 1000, "refine": estimate.refine * 1000},
        "cpu_percent": usage.cpu_percent(),
        "peak_rss_mb": usage.peak_rss_mb(),
        "peak_gpu_mb": gpu_mb,
        "timeline": rows,
    }
