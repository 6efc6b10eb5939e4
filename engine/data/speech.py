"""Speech audio from espeak-ng: random sentences, voices, rates, pitches and pauses.

espeak-ng is a Debian package (`apt-get install espeak-ng`); it writes a WAV
to stdout, which is resampled to the engine rate with PyAV (FFmpeg's swr).
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass

import av
import numpy as np

from engine.exceptions import EngineError

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f4", "en-us+m7")
_WORDS = [
    "hello",
    "thank",
    "you",
    "everyone",
    "today",
    "we",
    "will",
    "talk",
    "about",
    "the",
    "weather",
    "and",
    "the",
    "new",
    "project",
    "plan",
    "our",
    "team",
    "shipped",
    "a",
    "small",
    "release",
    "yesterday",
    "please",
    "open",
    "the",
    "window",
    "before",
    "the",
    "meeting",
    "one",
    "two",
    "three",
    "four",
    "five",
    "I",
    "think",
    "that",
    "sounds",
    "good",
    "could",
    "you",
    "say",
    "that",
    "again",
    "maybe",
    "later",
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "music",
    "plays",
    "softly",
    "in",
    "the",
    "background",
]


class SpeechError(EngineError):
    """espeak-ng is missing or failed."""


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    rate: int  # words per minute
    pitch: int  # 0 .. 99


def random_utterance(rng: random.Random, words: tuple[int, int] = (4, 14)) -> Utterance:
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(*words)))
    if rng.random() < 0.5:  # a comma makes espeak-ng pause mid-sentence
        cut = rng.randint(1, max(1, text.count(" ")))
        parts = text.split(" ")
        text = " ".join(parts[:cut]) + ", " + " ".join(parts[cut:])
    return Utterance(
        text=text, voice=rng.choice(VOICES), rate=rng.randint(130, 200), pitch=rng.randint(25, 75)
    )


def synthesize(utt: Utterance, sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at sample_rate."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    cmd = [exe, "--stdout", "-v", utt.voice, "-s", str(utt.rate), "-p", str(utt.pitch), utt.text]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise SpeechError(
            f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}"
        )
    with wave.open(io.BytesIO(proc.stdout)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, channels)
    return resample(pcm.mean(axis=1).astype(np.float32) / 32768.0, rate, sample_rate)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample mono float32 audio with FFmpeg's resampler."""
    if rate == target:
        return audio.astype(np.float32)
    frame = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    chunks = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def speech_take(seed: int, seconds: float, sample_rate: int) -> np.ndarray:
    """A take of `seconds`: utterances separated by silences of 0.2 .. 1.5 s (and leading silence)."""
    rng = random.Random(seed)
    total = int(seconds * sample_rate)
    out = np.zeros(total, dtype=np.float32)
    pos = int(rng.uniform(0.0, 0.6) * sample_rate)
    while pos < total:
        speech = synthesize(random_utterance(rng), sample_rate) * rng.uniform(0.5, 1.0)
        end = min(total, pos + len(speech))
        out[pos:end] = speech[: end - pos]
        pos = end + int(rng.uniform(0.2, 1.5) * sample_rate)
    return out
