"""Offline rendering: a reference image and an audio file -> a talking MP4, by the live algorithm.

The audio file is decoded piece by piece, and each segment runs as soon as its
audio window (lookahead included) has been read, exactly as the live engine
would schedule it; frames are encoded as soon as they are made. Nothing grows
with the audio's length, so minutes of audio render in flat memory. The MP4
carries the original audio (re-encoded; `audio_codec="flac"` keeps it bit-exact).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.audio.stream import AudioFeatureStream
from engine.benchinfo import peak_rss_mb, rss_mb
from engine.generation.segments import end_at, iter_segments, output_frames_for
from engine.generation.stages import (
    GenerationChoices,
    GenerationSettings,
    LowResStage,
    Reference,
    RefineStage,
)
from engine.media.audio_file import AudioFile
from engine.media.errors import MediaError
from engine.media.framing import framer
from engine.media.image import read_image
from engine.media.mp4 import MP4_SUFFIXES, Mp4Writer
from engine.media.paths import check_output
from engine.parts import Parts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderOptions:
    generation: GenerationChoices = field(default_factory=GenerationChoices)  # steps, seed, prompt
    face_check: bool = True  # frame the picture by its face, refuse one without (media.framing)
    size: tuple[int, int] | None = None  # output width, height (default: the preset's HR size)
    audio_codec: str = "aac"  # aac (plays everywhere), or flac / alac (lossless)


@dataclass(frozen=True)
class RenderReport:
    out: Path
    frames: int  # video frames written (25 fps)
    audio_seconds: float  # length of the input audio
    wall_seconds: float  # time the render took
    peak_rss_mb: float  # the process's peak resident memory
    rss_growth_mb: float  # resident memory at the end minus after the first segment (flat: ~0)

    @property
    def realtime_factor(self) -> float:
        """Render time / audio time (below 1 is faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else float("inf")


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, height, width, 3]."""
    width, height = size
    if frames.shape[1:3] == (height, width):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class _AudioFeed:
    """Reads the audio file on demand: the original to the MP4, the engine's 16 kHz mono to features."""

    def __init__(self, source: AudioFile, writer: Mp4Writer, features: AudioFeatureStream) -> None:
        self.source, self.writer, self.features = source, writer, features
        self.pieces = source.pieces()
        self.total_frames: int | None = None  # known once the audio has ended

    def read_until(self, sample: int) -> None:
        """Read until `sample` samples (16 kHz) are in, or the audio ends."""
        while self.total_frames is None and self.features.samples < sample:
            piece = next(self.pieces, None)
            if piece is None:
                self.features.finish()
                if self.features.samples == 0:
                    raise MediaError(f"{self.source.path}: the audio is empty")
                self.total_frames = output_frames_for(self.features.samples, self.features.config)
                return
            original, mono = piece
            if original is not None:
                self.writer.write_audio(original)
            self.features.push(mono)


def render(
    parts: Parts,
    image: Path | str,
    audio: Path | str,
    out: Path | str,
    options: RenderOptions | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> RenderReport:
    """Render `audio` spoken by the person in `image` into `out` (MP4).

    on_progress(frames_written, estimated_total_frames) is called after every segment.
    """
    options = options or RenderOptions()
    check_output(Path(out), MP4_SUFFIXES)
    cfg = parts.config
    size = options.size or (cfg.hr.width, cfg.hr.height)
    start = time.perf_counter()
    # Errors about the image come before any work on the audio.
    reference_image = framer(cfg, options.face_check, str(image))(read_image(image))
    with AudioFile(audio, cfg.time) as source:
        estimate = round(source.duration * cfg.time.fps) if source.duration else None
        writer = Mp4Writer(out, *size, cfg.time.fps, source.sample_rate, source.channels, options.audio_codec)
        try:
            reference = Reference.encode(parts, reference_image)
            settings = GenerationSettings.from_config(cfg, options.generation)
            low, refine = LowResStage(parts, reference, settings), RefineStage(parts, reference, settings)
            features = AudioFeatureStream(parts.audio, cfg)
            feed = _AudioFeed(source, writer, features)
            rss_after_first: float | None = None
            for planned in iter_segments(cfg):
                feed.read_until(planned.audio_stop)  # as live: the segment waits for its lookahead
                seg = planned
                if feed.total_frames is not None:
                    if planned.first_frame >= feed.total_frames:
                        break
                    seg = end_at(planned, feed.total_frames)
                frames = refine.run(low.run(seg, features.windows(seg)))
                writer.write_video(_resize(frames[: seg.output_frames], size).numpy())
                rss_after_first = rss_after_first or rss_mb()
                if on_progress:
                    on_progress(writer.frames_written, feed.total_frames or estimate)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    report = RenderReport(
        out=Path(out),
        frames=writer.frames_written,
        audio_seconds=features.samples / cfg.time.sample_rate,
        wall_seconds=time.perf_counter() - start,
        peak_rss_mb=peak_rss_mb(),
        rss_growth_mb=rss_mb() - (rss_after_first or 0.0),
    )
    log.info(
        "rendered %d frames (%.1f s of audio) in %.1f s (real-time factor %.2f) with %s",
        report.frames,
        report.audio_seconds,
        report.wall_seconds,
        report.realtime_factor,
        parts.source,
    )
    return report
