"""The pieces of a live session below its owners: worker threads, the input audio store, the VAD
gate, the virtual clock (pacing: test_pacing.py, the frame store: test_output.py)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import wave

import numpy as np
import pytest

from engine.audio.vad import VadGate
from engine.streaming.audio_in import AudioInput, AudioInputError
from engine.streaming.clock import VirtualClock
from engine.streaming.worker import Worker


def test_worker_runs_calls_in_order_off_the_loop_and_joins() -> None:
    async def main() -> None:
        worker = Worker("test-worker")
        loop_thread = threading.get_ident()
        results = await asyncio.gather(
            *(worker.submit(lambda i=i: (i, threading.get_ident())) for i in range(5))
        )
        assert [i for i, _ in results] == list(range(5))
        assert all(thread != loop_thread for _, thread in results)
        with pytest.raises(ZeroDivisionError):
            await worker.submit(lambda: 1 / 0)
        await worker.close()
        assert not worker.alive
        with pytest.raises(RuntimeError, match="closed"):
            worker.submit(lambda: None)

    asyncio.run(main())


def test_virtual_clock_jumps_to_the_next_wake_up_and_charges_stage_costs() -> None:
    async def main() -> None:
        clock = VirtualClock(start=10.0, costs=lambda stage: {"slow": 2.5}.get(stage, 0.0))
        worker = Worker("clock-test")
        order = []

        async def sleeper(when: float) -> None:
            await clock.sleep_until(when)
            order.append((when, clock.now()))

        await asyncio.gather(sleeper(13.0), sleeper(11.0), sleeper(12.0))
        assert order == [(11.0, 11.0), (12.0, 12.0), (13.0, 13.0)]
        result = await clock.compute(worker, "slow", sum, [1, 2, 3])
        assert result == 6 and clock.now() == 15.5
        await worker.close()
        await clock.aclose()

    asyncio.run(main())


def test_audio_input_fills_gaps_ignores_repeats_and_releases() -> None:
    audio = AudioInput(max_ahead_samples=16_000)
    assert audio.push(np.ones(100, np.float32), 0, now=1.0, clock_pts=0) == 100
    assert audio.push(np.full(100, 2.0, np.float32), 150, now=2.0, clock_pts=0) == 100  # gap 100..150
    assert audio.push(np.full(80, 3.0, np.float32), 200, now=3.0, clock_pts=0) == 30  # 200..250 known
    assert audio.end == 280
    got = audio.read(90, 290)
    assert got[:10].tolist() == [1.0] * 10 and not got[10:60].any() and got[60:160].tolist() == [2.0] * 100
    assert got[160:190].tolist() == [3.0] * 30 and not got[190:].any()
    assert audio.arrival(50) == 1.0 and audio.arrival(199) == 2.0 and audio.arrival(260) == 3.0
    assert audio.arrival(280) is None
    audio.silence_from(120, 400)
    assert audio.end == 400 and not audio.read(120, 400).any() and audio.read(0, 100).all()
    audio.release(110)
    assert audio.base == 110 and not audio.read(0, 110).any()
    with pytest.raises(AudioInputError, match="ahead"):
        audio.push(np.zeros(10, np.float32), 20_000, now=4.0, clock_pts=0)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = tmp_path_factory.mktemp("vad") / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Hello there, how are you today?"], check=True)
    with wave.open(str(path)) as w:
        rate, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
    x = data.astype(np.float32) / 32768
    return np.interp(np.arange(0, len(x), rate / 16_000), np.arange(len(x)), x).astype(np.float32)


def test_vad_passes_speech_and_silences_noise_with_a_hangover(speech: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    quiet = np.zeros(16_000, np.float32)
    signal = (
        np.concatenate([quiet, speech, quiet])
        + rng.standard_normal(len(speech) + 32_000).astype(np.float32) * 0.003
    )
    gate = VadGate(16_000, mode=2, hangover_ms=300)
    pieces = [gate.process(signal[i : i + 500]) for i in range(0, len(signal), 500)]  # any piece size
    out = np.concatenate([*pieces, gate.flush()])
    assert len(out) == len(signal)
    assert not out[:15_000].any()  # noise before the speech: gated (the VAD's warm-up included)
    voiced = slice(16_000, 16_000 + len(speech))
    assert np.count_nonzero(out[voiced]) > 0.6 * len(speech)
    last = 16_000 + len(speech)
    assert out[last : last + 4000].any() and not out[last + 8000 :].any()  # hangover, then silence
