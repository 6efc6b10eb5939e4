"""Live sessions on a virtual clock (exact timing) and on the real clock (overlap of the two workers)."""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.audio.stream import AudioFeatureStream
from engine.benchinfo import rss_mb
from engine.config import Config
from engine.frames import AudioChunk, FrameSource, VideoFrame
from engine.parts import Parts
from engine.presets import get_preset
from engine.streaming.audio_in import AudioInputError
from engine.streaming.clock import RealClock, VirtualClock
from engine.streaming.engine import Engine, TooManySessionsError
from engine.streaming.playback import PIECE_SECONDS, play
from engine.streaming.session import Session, SessionClosedError, SessionOptions
from tests.factories import micro_config, randomize_

FIXTURE = Path(__file__).parents[2] / "fixtures" / "procedural" / "clip_001000"
MICRO = micro_config()
TINY = get_preset("tiny")


def _fixture_audio() -> np.ndarray:
    with wave.open(str(FIXTURE / "audio.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def _reference() -> torch.Tensor:
    with av.open(str(FIXTURE / "video.mkv")) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


SPEECH = _fixture_audio()  # 3 s: silence, then speech
REFERENCE = _reference()


@pytest.fixture(scope="module")
def micro_parts() -> Parts:
    return Parts.random(MICRO, seed=1)


@pytest.fixture(scope="module")
def tiny_parts() -> Parts:
    return Parts.random(TINY, seed=1)


@dataclass
class Run:
    """What a test session produced."""

    session: Session
    # repr=False: asyncio may repr a finished task's result, and printing every frame is slow.
    frames: list[VideoFrame] = field(default_factory=list, repr=False)
    audio: list[AudioChunk] = field(default_factory=list, repr=False)
    pushed: list[tuple[int, np.ndarray]] = field(default_factory=list, repr=False)
    stop_pushing: bool = False


class Counting(list):
    """Counts what is appended instead of keeping it (long runs keep the test's memory flat)."""

    n = 0

    def append(self, item: object) -> None:
        self.n += 1


async def stream(
    engine: Engine,
    audio: np.ndarray,
    seconds: float,
    options: SessionOptions,
    *,
    piece: int = 320,
    during: Callable[[Run], Any] | None = None,
    wrap: Callable | None = None,
    keep: bool = True,
) -> Run:
    """Push `audio` in real-time pieces, collect `seconds` of frames and output audio, close."""
    session = await engine.open_session(REFERENCE, options=options, wrap=wrap)
    run = Run(session) if keep else Run(session, Counting(), Counting(), Counting())
    clock = engine.clock
    end = session.t0 + session.delay + seconds

    async def produce() -> None:
        for start in range(0, len(audio), piece):
            await clock.sleep_until(session.t0 + start / 16_000)
            if run.stop_pushing:
                return
            chunk = audio[start : start + piece]
            run.pushed.append((session.push_audio(chunk), chunk))

    async def video() -> None:
        async for frame in session.frames():
            if frame.due >= end:
                return
            run.frames.append(frame)

    async def sound() -> None:
        async for chunk in session.audio_out():
            if chunk.due >= end:
                return
            run.audio.append(chunk)

    tasks = [asyncio.create_task(c) for c in (produce(), video(), sound())]
    if during is not None:
        tasks.append(asyncio.create_task(during(run)))
    await asyncio.gather(*tasks[1:3])
    for t in tasks:
        t.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await engine.close_session(session)
    for outcome in outcomes:  # a failed check in `during` fails the test
        if isinstance(outcome, Exception):
            raise outcome
    return run


def virtual_engine(parts: Parts, costs: dict[str, float]) -> Engine:
    return Engine(parts, clock=VirtualClock(start=100.0, costs=lambda stage: costs.get(stage, 0.0)))


async def finish(engine: Engine) -> None:
    await engine.close()
    assert isinstance(engine.clock, VirtualClock)
    await engine.clock.aclose()


def _segment_s(config: Config) -> float:
    return config.segment_video_frames / config.time.fps


# ----- exact output on a virtual clock ------------------------------------------------------------


@pytest.mark.slow
def test_every_frame_on_time_and_the_audio_delayed_to_match(tiny_parts: Parts) -> None:
    seconds = 3.0
    engine = virtual_engine(tiny_parts, {"low_res": 0.15, "refine": 0.25})

    async def main() -> Run:
        try:
            return await stream(engine, SPEECH, seconds, SessionOptions(target_delay_ms=1000))
        finally:
            await finish(engine)

    run = asyncio.run(main())
    s = run.session
    assert [f.pts for f in run.frames] == list(range(round(25 * seconds)))
    assert all(f.times.emitted == f.due == s.timeline.frame_due(f.pts) for f in run.frames)  # the delay is D
    assert all(f.source is FrameSource.REFINED for f in run.frames)
    assert all(f.image.shape == (TINY.hr.height, TINY.hr.width, 3) for f in run.frames)
    # Each frame depends on its segment's audio window: its own 40 ms plus context and lookahead.
    for f in run.frames:
        assert f.audio_start <= f.pts * 640 and (f.pts + 1) * 640 <= f.audio_stop
    # The output audio is the input, sample for sample, due exactly D after it arrived.
    out = np.concatenate([c.samples for c in run.audio])
    assert [c.pts for c in run.audio] == list(range(0, len(out), 320))
    np.testing.assert_array_equal(out, SPEECH[: len(out)])
    assert all(c.due == s.timeline.sample_due(c.pts) for c in run.audio)
    # A/V offset: frame n and audio sample 640 n leave at the same instant.
    chunk_due = {c.pts: c.due for c in run.audio}
    assert all(chunk_due[f.pts * 640] == f.due for f in run.frames)
    stats = s.snapshot()
    assert stats.av_offset_ms == pytest.approx(0.0, abs=1e-6)
    assert stats.fallbacks == {}
    assert stats.frames_out == len(run.frames) + 1  # the consumer stopped at the first frame past the end
    assert stats.added_latency_ms is not None and stats.added_latency_ms["p99"] < 1000


def test_frames_follow_the_audio() -> None:
    """Different audio gives different frames (the model hears it), the same gives the same."""
    parts = Parts.random(MICRO, seed=2)
    for model in (parts.lr_a2v, parts.refiner):  # fresh DiTs ignore their conditions (adaLN-zero)
        randomize_(model, std=0.1)

    async def frames(audio: np.ndarray) -> np.ndarray:
        engine = virtual_engine(parts, {"low_res": 0.05, "refine": 0.05})
        try:
            run = await stream(engine, audio, 2.0, SessionOptions(target_delay_ms=700, vad=False))
        finally:
            await finish(engine)
        return np.stack([f.image for f in run.frames])

    noise = np.random.default_rng(0).standard_normal(32_000).astype(np.float32) * 0.3
    a, b, c = (asyncio.run(frames(x)) for x in (SPEECH[:32_000], SPEECH[:32_000], noise))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    low_res=st.sampled_from([0.05, 0.2, 0.3, 0.45]),
    refine=st.sampled_from([0.05, 0.25, 0.45, 0.9]),
)
@pytest.mark.slow
def test_slow_stages_get_fallbacks_and_degrade_but_never_delay(
    micro_parts: Parts, low_res: float, refine: float
) -> None:
    seconds, segment_s = 12.0, _segment_s(MICRO)
    engine = virtual_engine(micro_parts, {"low_res": low_res, "refine": refine})
    options = SessionOptions(target_delay_ms=1000)

    async def main() -> Run:
        try:
            return await stream(engine, np.zeros(round(16_000 * seconds), np.float32), seconds, options)
        finally:
            await finish(engine)

    run = asyncio.run(main())
    stats = run.session.snapshot()
    # The delay never grows: exactly 25 frames a second, each at its due time.
    assert [f.pts for f in run.frames] == list(range(round(25 * seconds)))
    assert all(f.times.emitted == f.due for f in run.frames)
    fits = max(low_res, refine) < segment_s and low_res + refine + 0.4 + 0.04 <= 1.0
    if fits:
        assert stats.fallbacks == {} and stats.degrade_level == 0
    else:
        assert sum(stats.fallbacks.values()) > 0 and stats.degrade_changes > 0
    if refine > segment_s and low_res < segment_s:
        # Refining cannot keep up: the policy ends with the refiner off and the LR frames on time.
        assert not stats.refiner
        tail = run.frames[-50:]
        assert all(f.source is FrameSource.LOW_RES for f in tail)


def test_one_very_slow_call_does_not_freeze_the_session(micro_parts: Parts) -> None:
    """The LR stage takes 6 s once (a hiccup: another process, a page-in), then its usual time.
    Segments that can no longer be on time are skipped; the skips must not go on for good: the
    estimate that one call inflated would otherwise call every later segment too late, none would
    run to correct it, and the picture would hold its last frame for the rest of the session."""
    calls: list[str] = []

    def costs(stage: str) -> float:
        calls.append(stage)
        return 6.0 if stage == "low_res" and calls.count("low_res") == 3 else 0.05

    engine = Engine(micro_parts, clock=VirtualClock(start=100.0, costs=costs))
    seconds = 20.0

    async def main() -> Run:
        try:
            speech = np.tile(SPEECH, 8)[: round(16_000 * seconds)]
            return await stream(engine, speech, seconds, SessionOptions(target_delay_ms=1000))
        finally:
            await finish(engine)

    run = asyncio.run(main())
    assert calls.count("low_res") > 3  # the slow call happened
    last = run.frames[-100:]  # the last 4 s, long after the slow call ended
    assert sum(f.source is FrameSource.REPEAT for f in last) < 10, [f.source for f in last]


def test_interrupt_drops_queued_speech_and_goes_idle_within_a_segment(micro_parts: Parts) -> None:
    costs = {"low_res": 0.08, "refine": 0.12}
    engine = virtual_engine(micro_parts, costs)
    speech = np.tile(SPEECH[8000:], 3)  # ~8 s of speech, pushed ahead like TTS
    seen: list[tuple[int, torch.Tensor]] = []

    def wrap(name: str, fn: Callable) -> Callable:
        if name != "low_res":
            return fn

        def low_res(job: Any) -> Any:
            seen.append((job.generation, job.seg, job.audio.value.clone()))
            return fn(job)

        return low_res

    marks: dict[str, float] = {}

    async def interrupt_later(run: Run) -> None:
        await engine.clock.sleep_until(run.session.t0 + 3.0)
        marks["at"] = engine.clock.now()
        run.stop_pushing = True  # the agent stops its speech (barge-in)...
        run.session.interrupt()  # ...and drops what it had queued

    async def main() -> Run:
        try:
            return await stream(
                engine,
                speech,
                5.0,
                SessionOptions(target_delay_ms=800, vad=False),
                piece=16_000,
                during=interrupt_later,
                wrap=wrap,
            )
        finally:
            await finish(engine)

    run = asyncio.run(main())
    s, at = run.session, marks["at"]
    # Audio out: speech until the interrupt, then silence, although more speech had been queued.
    before = np.concatenate([c.samples for c in run.audio if c.due < at])
    after = np.concatenate([c.samples for c in run.audio if c.due >= at])
    assert np.abs(before).max() > 0.05 and not after.any()
    # Video: frames of the new generation from at most one segment (+ compute) after the interrupt.
    showing = math.floor((at - s.t0 - s.delay) * 25)
    first_idle = min(f.pts for f in run.frames if f.generation == 1)
    budget = MICRO.segment_video_frames + math.ceil((costs["low_res"] + costs["refine"]) * 25)
    assert first_idle - showing <= budget
    assert all(f.generation == 1 for f in run.frames if f.pts >= first_idle)
    assert all(f.times.emitted == f.due for f in run.frames)
    # The new generation heard the audio played before the interrupt, then only silence.
    idle = [(seg, audio) for generation, seg, audio in seen if generation == 1]
    origin = max(0, idle[0][0].context_first_frame - MICRO.audio.left_context_frames)
    playing = math.floor((at - s.t0 - s.delay) * 16_000)
    heard = np.zeros(idle[-1][0].audio_stop - origin * 640, np.float32)
    played = max(0, playing - origin * 640)
    heard[:played] = speech[origin * 640 : origin * 640 + played]
    expected = AudioFeatureStream(micro_parts.audio, MICRO, start_frame=origin)
    with torch.no_grad():
        expected.push(heard)
        for seg, audio in idle:
            torch.testing.assert_close(audio, expected.windows(seg))
    assert s.snapshot().generation == 1


def test_close_leaves_no_tasks_or_threads(micro_parts: Parts) -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        engine = Engine(micro_parts, max_sessions=2)
        first = await engine.open_session(REFERENCE, options=SessionOptions(target_delay_ms=600))
        second = await engine.open_session(REFERENCE, options=SessionOptions(target_delay_ms=600))
        with pytest.raises(TooManySessionsError):
            await engine.open_session(REFERENCE)
        for s in (first, second):
            s.push_audio(SPEECH[:8000])
        frames = []
        async for f in first.frames():
            frames.append(f)
            if len(frames) == 5:
                break
        await engine.close()
        assert not engine.sessions and first.closed
        with pytest.raises(SessionClosedError):
            first.push_audio(SPEECH[:320])
        assert [f async for f in second.frames()] == []  # a closed session's outputs end at once
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())
    assert set(threading.enumerate()) <= before  # every worker thread was joined


@pytest.mark.slow
def test_a_long_session_keeps_memory_flat(micro_parts: Parts) -> None:
    """15 minutes of stream on the virtual clock (micro-size parts, outputs reused after the first
    segment so it runs in seconds): memory after 3 minutes and after 15 is the same. Counted as
    the Python allocator's live blocks (every leaked object, list entry or array header is one;
    free to read, where tracemalloc would triple the run) and as resident memory (array data)."""

    def reuse(name: str, fn: Callable) -> Callable:
        first: list[Any] = []

        def stage(*args: Any) -> Any:
            if not first:
                first.append(fn(*args))
            return first[0]

        return stage

    engine = virtual_engine(micro_parts, {"low_res": 0.1, "refine": 0.15})
    blocks: dict[float, int] = {}
    rss: dict[float, float] = {}

    async def sample(run: Run) -> None:
        for minute in (3, 15):
            await engine.clock.sleep_until(run.session.t0 + run.session.delay + minute * 60 - 1)
            gc.collect()
            blocks[minute], rss[minute] = sys.getallocatedblocks(), rss_mb()
            assert len(run.session.output.store) <= 3 * MICRO.segment_video_frames
            assert len(run.session.input.audio.buffer) <= 16_000 * 3

    audio = np.tile(SPEECH, 300)  # 15 minutes
    options = SessionOptions(target_delay_ms=800)
    run = asyncio.run(
        _finally(
            stream(engine, audio, 15 * 60, options, piece=8000, during=sample, wrap=reuse, keep=False),
            finish(engine),
        )
    )
    assert isinstance(run.frames, Counting) and run.frames.n == 15 * 60 * 25
    # 12 minutes are 18,000 frames and 4,500 audio pieces: one block kept per frame would be
    # 18,000 blocks; the allowance is for caches that fill once (asyncio, logging, hypothesis).
    assert blocks[15] - blocks[3] < 5_000, blocks
    assert rss[15] - rss[3] < 20, rss  # MB


async def _finally(coro: Any, cleanup: Any) -> Any:
    try:
        return await coro
    finally:
        await cleanup


# ----- the two workers overlap (real clock) -------------------------------------------------------


@pytest.mark.realtime
def test_the_two_stages_overlap(micro_parts: Parts) -> None:
    """Each stage sleeps 150 ms: segments complete every ~150 ms (overlapped), not every 300 ms."""
    ends: list[float] = []

    def slow(name: str, fn: Callable) -> Callable:
        def stage(*args: Any) -> Any:
            result = fn(*args)
            time.sleep(0.15)
            if name == "refine":
                ends.append(time.perf_counter())
            return result

        return stage

    async def main() -> None:
        engine = Engine(micro_parts, clock=RealClock())
        session = await engine.open_session(
            REFERENCE, options=SessionOptions(target_delay_ms=5000), wrap=slow
        )
        session.push_audio(np.zeros(16_000 * 6, np.float32), pts=0)  # all the audio at once: no waiting
        while len(ends) < 10:
            await asyncio.sleep(0.05)
        await engine.close()

    asyncio.run(main())
    intervals = np.diff(ends[2:10])
    # Overlapped: one stage's 150 ms plus its compute (measured 0.19-0.225 s on 2 busy cores);
    # in series the sum would be >= 0.30. The bound sits between the two.
    assert np.median(intervals) < 0.26, intervals


def test_push_audio_checks_its_input_and_resumes_at_the_clock_after_a_pause(micro_parts: Parts) -> None:
    engine = virtual_engine(micro_parts, {})

    async def main() -> None:
        session = await engine.open_session(REFERENCE, options=SessionOptions(target_delay_ms=600))
        assert session.push_audio(np.zeros(320, np.float32)) == 0
        assert session.push_audio((np.ones(320) * 1000).astype(np.int16)) == 320  # int16 is scaled
        assert session.input.audio.read(320, 321)[0] == pytest.approx(1000 / 32768)
        await engine.clock.sleep_until(session.t0 + 2.0)  # the producer pauses for 2 s
        assert session.push_audio(np.zeros(320, np.float32)) == 32_000  # resumes at the clock
        for bad, message in [
            (np.zeros((2, 320), np.float32), "1-D"),
            (np.array([0.0, np.nan], np.float32), "NaN"),
            (np.zeros(320, np.int32), "float"),
        ]:
            with pytest.raises(AudioInputError, match=message):
                session.push_audio(bad)
        with pytest.raises(AudioInputError, match="ahead"):
            session.push_audio(np.zeros(320, np.float32), pts=16_000 * 1000)

    asyncio.run(_finally(main(), finish(engine)))


def test_a_recording_played_late_keeps_its_own_timeline(micro_parts: Parts) -> None:
    """`ihuman live --audio` and the latency harness play a recording on the clock: when the
    loop was busy at the start, its pieces come late, and stay where the recording has them."""
    engine = virtual_engine(micro_parts, {})
    rate = micro_parts.config.time.sample_rate
    audio = np.zeros(2 * rate, np.float32)
    audio[rate : rate + 320] = 0.5  # a mark at 1 s

    async def main() -> None:
        session = await engine.open_session(REFERENCE, options=SessionOptions(target_delay_ms=900))
        await engine.clock.sleep_until(session.t0 + 0.5)  # 500 ms late, more than max_audio_lag_ms
        ends: list[int] = []
        await play(session, engine.clock, audio, on_push=lambda end, when: ends.append(end))
        piece = round(PIECE_SECONDS * rate)
        assert ends == [min(start + piece, len(audio)) for start in range(0, len(audio), piece)]
        assert session.input.audio.read(rate, rate + 320) == pytest.approx(np.full(320, 0.5))

    asyncio.run(_finally(main(), finish(engine)))


def test_a_live_producer_stalled_by_the_loop_keeps_its_place(micro_parts: Parts) -> None:
    """A microphone's pieces held back by a busy event loop come in a burst: pushed by its clock
    they stay where they belong; pushed without pts the burst would start at the clock."""
    engine = virtual_engine(micro_parts, {})

    async def main() -> None:
        session = await engine.open_session(REFERENCE, options=SessionOptions(target_delay_ms=900))
        producer = session.producer_clock()
        piece = np.zeros(320, np.float32)
        first = session.push_live_audio(piece, producer)
        await engine.clock.sleep_until(session.t0 + 0.6)  # the loop was busy: 30 pieces held back
        burst = [session.push_live_audio(piece, producer) for _ in range(30)]
        assert burst == [first + 320 * (i + 1) for i in range(30)]
        assert producer.anchors == 1

    asyncio.run(_finally(main(), finish(engine)))


def test_a_failing_stage_ends_its_session_and_spares_the_others(micro_parts: Parts) -> None:
    """One session's refiner runs out of memory (simulated) on its third segment: that session
    says why (`failed`: its owner tells the client and ends it) while another session of the
    same engine streams on."""
    engine = virtual_engine(micro_parts, {"low_res": 0.05, "refine": 0.05})

    def broken(stage: str, fn: Callable) -> Callable:
        calls = [0]

        def run(*args: Any) -> Any:
            calls[0] += 1
            if stage == "refine" and calls[0] >= 3:
                raise RuntimeError("CUDA out of memory (simulated)")
            return fn(*args)

        return run

    async def main() -> tuple[str | None, Run]:
        options = SessionOptions(target_delay_ms=600)
        failing = await stream(engine, SPEECH, 3.0, options, wrap=broken)
        healthy = await stream(engine, SPEECH, 3.0, options)
        await finish(engine)
        return failing.session.failure, healthy

    reason, healthy = asyncio.run(main())
    assert reason is not None and "CUDA out of memory" in reason
    assert healthy.session.failure is None
    assert sum(f.source == FrameSource.REFINED for f in healthy.frames) > 10


def test_a_stalled_stage_is_caught_by_the_watchdog(micro_parts: Parts) -> None:
    """A refiner call that never returns in time (a hung driver: here it sleeps 3 s) fails the
    session with that reason after stall_timeout_s, instead of fallback frames forever."""
    engine = virtual_engine(micro_parts, {"low_res": 0.05, "refine": 0.05})
    release = threading.Event()

    def hung(stage: str, fn: Callable) -> Callable:
        def run(*args: Any) -> Any:
            if stage == "refine":
                release.wait(3.0)
            return fn(*args)

        return run

    async def main() -> str | None:
        options = SessionOptions(target_delay_ms=600, stall_timeout_s=0.5)
        run = await stream(engine, SPEECH, 2.0, options, wrap=hung)
        release.set()
        await finish(engine)
        return run.session.failure

    reason = asyncio.run(main())
    assert reason is not None and "the refine stage stalled: no result in 0.5 s" in reason


def test_nan_latents_stop_the_session_instead_of_streaming_black() -> None:
    parts = Parts.random(MICRO, seed=1)
    engine = virtual_engine(parts, {"low_res": 0.05, "refine": 0.05})

    async def main() -> str | None:
        await engine.estimate()  # the warm-up runs healthy; then the refiner's weights go bad
        with torch.no_grad():
            next(parts.refiner.parameters()).fill_(float("nan"))
        run = await stream(engine, SPEECH, 2.0, SessionOptions(target_delay_ms=600))
        await finish(engine)
        return run.session.failure

    reason = asyncio.run(main())
    assert reason is not None and "the refiner produced non-finite values" in reason
