"""The VAD gate: speech passes, noise is silenced, with a hangover after speech."""

from __future__ import annotations

import subprocess
import wave

import numpy as np
import pytest

from engine.audio.vad import VadGate


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
