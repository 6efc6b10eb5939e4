"""A live session on the real clock: `python -m ihuman.bench.live [--seconds 60] [--out FILE.json]`.

Procedural speech (espeak-ng with pauses) is pushed in 20 ms pieces at real
time, the way a microphone delivers it; the frames and the delayed audio are
consumed as a transport would. Reports sustained fps, the added latency
(arrival of the last audio sample a frame depends on -> frame emitted)
p50/p90/p99, the target delay D, fallbacks, degradation and per-stage times.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import torch

from engine.benchinfo import environment, peak_rss_mb, percentiles, write_report
from engine.data.clip import make_clip
from engine.data.speech import speech_take
from engine.frames import FrameSource
from engine.generation.stages import GenerationChoices
from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions


async def run(engine: Engine, seconds: float, options: SessionOptions) -> dict:
    cfg = engine.config
    audio = speech_take(11, seconds + 2, cfg.time.sample_rate)
    reference = make_clip(11, 0.04, cfg.hr.width, cfg.hr.height).frames[0]
    estimate = await engine.estimate()
    session = await engine.open_session(reference, options=options)
    piece = cfg.time.sample_rate // 50
    emitted: list[float] = []
    sources: dict[str, int] = {}
    lateness: list[float] = []
    end = session.t0 + session.delay + seconds

    async def produce() -> None:
        for start in range(0, len(audio), piece):
            await engine.clock.sleep_until(session.t0 + start / cfg.time.sample_rate)
            session.push_audio(audio[start : start + piece])

    async def video() -> None:
        async for frame in session.frames():
            if frame.due >= end:
                return
            now = engine.clock.now()
            emitted.append(now)
            lateness.append(now - frame.due)
            sources[frame.source.value] = sources.get(frame.source.value, 0) + 1

    async def sound() -> None:
        async for chunk in session.audio_out():
            if chunk.due >= end:
                return

    producer = asyncio.create_task(produce())
    await asyncio.gather(video(), sound())
    producer.cancel()
    stats = session.snapshot()
    await engine.close()
    frames = len(emitted)
    fallbacks = frames - sources.get(FrameSource.REFINED.value, 0)
    return {
        "bench": "live session, real clock",
        **environment(engine.parts.device),
        "weights": engine.parts.source,
        "preset": cfg.name,
        "seconds": seconds,
        "frames": frames,
        "sustained_fps": (frames - 1) / (emitted[-1] - emitted[0]),
        "target_delay_ms": stats.target_delay_ms,
        "added_latency_ms": stats.added_latency_ms,
        "emitted_after_due_ms": percentiles([x * 1000 for x in lateness]),
        "fallback_rate": fallbacks / frames,
        "frames_by_source": sources,
        "lr_steps": stats.lr_steps,
        "degrade_level_final": stats.degrade_level,
        "degrade_changes": stats.degrade_changes,
        "skipped_segments": stats.skipped_segments,
        "refine_dropped": stats.refine_dropped,
        "av_offset_ms": stats.av_offset_ms,
        "stage_ms": stats.stage_ms,
        "warm_up_stage_ms": {"low_res": estimate.low_res * 1000, "refine": estimate.refine * 1000},
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bundle", type=Path, help="trained bundle (default: random weights of --preset)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--delay-ms", type=float, help="target delay (default: from the measured compute)")
    parser.add_argument("--steps", type=int, help="LR-A2V Euler steps (default: the config's)")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    engine = Engine.load(args.bundle, preset=args.preset, device=args.device)
    options = SessionOptions(target_delay_ms=args.delay_ms, generation=GenerationChoices(lr_steps=args.steps))
    started = time.perf_counter()
    report = asyncio.run(run(engine, args.seconds, options))
    report["wall_seconds"] = time.perf_counter() - started
    print(write_report(report, args.out))


if __name__ == "__main__":
    main()
