"""A session's input audio on its pts axis: gaps are silence, repeats change nothing, old audio
is released."""

from __future__ import annotations

import numpy as np
import pytest

from engine.streaming.audio_in import AudioInput, AudioInputError


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
