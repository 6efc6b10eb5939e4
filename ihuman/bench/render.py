"""Offline render speed and memory: `ihuman bench render [--seconds 180] [--out FILE.json]`.

Renders procedural speech (espeak-ng sentences with pauses) of the requested
length with `--bundle DIR` or a preset's random weights, and reports the
real-time factor, per-segment wall time (p50/p90/p99) and resident memory
sampled after every segment: flat memory means the RSS after the first
segment and at the end agree.
"""

from __future__ import annotations

import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from engine.benchinfo import environment, percentiles, rss_mb
from engine.data.clip import make_clip
from engine.data.speech import speech_take
from engine.parts import Parts
from engine.render import RenderOptions, render


def _inputs(folder: Path, seconds: float) -> tuple[Path, Path]:
    """A procedural character's first frame and `seconds` of procedural speech."""
    clip = make_clip(7, 0.04, 640, 352)
    reference = folder / "reference.png"
    Image.fromarray(clip.frames[0].permute(1, 2, 0).numpy()).save(reference)
    audio = speech_take(7, seconds, 16_000)
    wav = folder / "speech.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())
    return reference, wav


def run(parts: Parts, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        reference, wav = _inputs(Path(tmp), seconds)
        stamps: list[float] = []
        rss: list[float] = []

        def sample(frames: int, total: int | None) -> None:
            stamps.append(time.perf_counter())
            rss.append(rss_mb())

        start = time.perf_counter()
        options = RenderOptions(face_check=False)  # a procedural character: framed already
        report = render(parts, reference, wav, Path(tmp) / "out.mp4", options, on_progress=sample)
    segment_ms = np.diff([start, *stamps]) * 1000
    quarter = [rss[min(len(rss) - 1, round(q * (len(rss) - 1)))] for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return {
        "bench": "offline render",
        **environment(parts.device),
        "weights": parts.source,
        "preset": parts.config.name,
        "audio_seconds": report.audio_seconds,
        "frames": report.frames,
        "segments": len(stamps),
        "wall_seconds": report.wall_seconds,
        "realtime_factor": report.realtime_factor,
        "segment_ms": percentiles(segment_ms[1:].tolist()),  # the first segment includes set-up
        "first_segment_ms": float(segment_ms[0]),
        "rss_mb_at_0_25_50_75_100_percent": quarter,
        "rss_growth_mb": report.rss_growth_mb,
        "peak_rss_mb": report.peak_rss_mb,
    }
