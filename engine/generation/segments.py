"""The rolling segment planner: pure arithmetic shared by `ihuman render` and the live engine.

The video is produced in segments of `new` latent frames (`new * 4` video
frames, 320 ms by default). Segment k generates video frames
[k * F, (k + 1) * F) with F = segment_video_frames, conditioned on the last
`motion` latent frames of what came before and on the reference prefix.
Before the first segment the stream has a still history: the reference
picture held for `motion` latents over silence (stages.Reference), so every
segment, the first included, continues motion as the generator was trained
to. Its audio window spans its motion and new frames plus the
left context before and the lookahead after, all taken `audio_lead_frames`
later when the generator hears ahead (config.SegmentConfig); samples outside
the audio are zeros. A segment can run once its audio window's end has been
heard: that is the latency the lookahead and the lead cost.

pts: video frames count at 25 fps from 0; audio samples at 16 kHz from 0;
video frame n shows the audio samples [n * 640, (n + 1) * 640).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

from engine.config import Config


@dataclass(frozen=True)
class Segment:
    index: int
    motion_latents: int  # clean latent frames carried over (for the first: the still reference)
    new_latents: int  # latent frames generated
    first_frame: int  # pts of the first video frame generated
    frames: int  # video frames generated (new_latents * temporal stride)
    output_frames: int  # video frames emitted (fewer than `frames` only at the end of finite audio)
    context_first_frame: int  # first video frame covered by the motion latents
    audio_first_frame: int  # the frame whose audio the first motion latent hears (its own + lead)
    audio_start: int  # first sample of the audio window (negative = zeros before the audio)
    audio_stop: int  # one past its last sample (beyond the audio = zeros / not yet heard)

    @property
    def frame_pts(self) -> range:
        """pts of the video frames this segment emits."""
        return range(self.first_frame, self.first_frame + self.output_frames)

    @property
    def latent_frames(self) -> int:
        """Motion + new: the latent frames with an audio window."""
        return self.motion_latents + self.new_latents


def iter_segments(config: Config) -> Iterator[Segment]:
    """The unbounded sequence of segments of a live stream."""
    index = 0
    while True:
        yield segment(index, config)
        index += 1


def segment(index: int, config: Config) -> Segment:
    """Segment `index` of a stream."""
    stride = config.time.vae_temporal_stride
    spf = config.time.samples_per_frame
    new = config.segment.new_latents
    frames = new * stride
    first = index * frames
    motion = config.segment.motion_latents
    context_first = first - motion * stride
    heard_first = context_first + config.segment.audio_lead_frames
    left = config.audio.left_context_frames
    return Segment(
        index=index,
        motion_latents=motion,
        new_latents=new,
        first_frame=first,
        frames=frames,
        output_frames=frames,
        context_first_frame=context_first,
        audio_first_frame=heard_first,
        audio_start=(heard_first - left) * spf,
        audio_stop=(first + frames + config.audio_wait_frames) * spf,
    )


def output_frames_for(samples: int, config: Config) -> int:
    """Video frames of a clip of `samples` audio samples: every started 40 ms gets a frame."""
    return math.ceil(samples / config.time.samples_per_frame)


def plan_segments(samples: int, config: Config) -> list[Segment]:
    """The segments of finite audio; the last one emits only the frames the audio lasts."""
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    total = output_frames_for(samples, config)
    plan = []
    for seg in iter_segments(config):
        if seg.first_frame >= total:
            break
        plan.append(end_at(seg, total))
    return plan


def end_at(seg: Segment, total_frames: int) -> Segment:
    """The segment of a stream that ends after `total_frames` video frames (it emits fewer frames)."""
    remaining = total_frames - seg.first_frame
    if remaining >= seg.frames:
        return seg
    if remaining <= 0:
        raise ValueError(f"segment {seg.index} starts at frame {seg.first_frame}, after the end")
    return dataclasses.replace(seg, output_frames=remaining)
