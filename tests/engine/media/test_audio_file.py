"""Audio files: any rate and channel count to 16 kHz mono, errors for files that cannot be used."""

import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.media.audio_file import AudioFile
from engine.media.errors import MediaError


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """samples float [S] or [S, channels] in [-1, 1] -> 16-bit PCM WAV."""
    data = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(data, -1, 1) * 32767).round().astype("<i2").tobytes())
    return path


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _decode(path: Path) -> np.ndarray:
    with AudioFile(path) as f:
        return np.concatenate([mono for _, mono in f.pieces()])


@pytest.mark.parametrize("rate", [16_000, 22_050, 44_100, 48_000])
def test_any_rate_becomes_16k_with_the_same_length_and_level(tmp_path: Path, rate: int) -> None:
    mono = _decode(write_wav(tmp_path / "a.wav", _tone(rate, 1.0), rate))
    assert abs(len(mono) - 16_000) <= 2
    rms = float(np.sqrt(np.mean(mono[1000:15000] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_stereo_is_averaged_without_the_downmix_gain(tmp_path: Path) -> None:
    left = _tone(16_000, 0.5)
    stereo = np.stack([left, left], axis=1)  # FFmpeg's mono downmix would make this +3 dB
    mono = _decode(write_wav(tmp_path / "s.wav", stereo, 16_000))
    np.testing.assert_allclose(mono, left, atol=1 / 32767 + 1e-6)


def test_files_that_cannot_be_used(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        AudioFile(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("this is not audio")
    with pytest.raises(MediaError, match="not an audio format"):
        AudioFile(tmp_path / "text.wav")
    Image.new("RGB", (8, 8)).save(tmp_path / "picture.png")
    with pytest.raises(MediaError, match="no audio stream"):
        AudioFile(tmp_path / "picture.png")
