import dataclasses
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.generation.segments import iter_segments, output_frames_for, plan_segments
from engine.presets import PRESETS, get_preset

TINY = get_preset("tiny")
SPF = TINY.time.samples_per_frame


@settings(max_examples=200, deadline=None)
@given(
    samples=st.integers(min_value=1600, max_value=10 * 60 * 16_000),
    preset=st.sampled_from(sorted(PRESETS)),
    lead=st.integers(min_value=0, max_value=3),
)
def test_every_output_frame_exactly_once_with_monotone_pts(samples: int, preset: str, lead: int) -> None:
    config = get_preset(preset)
    config = dataclasses.replace(config, segment=dataclasses.replace(config.segment, audio_lead_frames=lead))
    plan = plan_segments(samples, config)
    pts = [p for seg in plan for p in seg.frame_pts]
    assert pts == list(range(output_frames_for(samples, config)))  # once each, in order
    assert len(pts) * SPF >= samples > (len(pts) - 1) * SPF  # duration within one frame of the audio
    stride = config.time.vae_temporal_stride
    for previous, seg in itertools.pairwise(plan):
        assert seg.first_frame == previous.first_frame + previous.frames
        # Motion latents are the latest ones of the history: generated, or the still reference before.
        assert seg.motion_latents == config.segment.motion_latents
        assert seg.context_first_frame == seg.first_frame - seg.motion_latents * stride
    for seg in plan:
        left, ahead = config.audio.left_context_frames, config.audio.lookahead_frames
        # Heard `lead` frames early: the window starts and ends that much later.
        assert seg.audio_start == (seg.context_first_frame + lead - left) * SPF
        assert seg.audio_stop == (seg.first_frame + seg.frames + ahead + lead) * SPF
        assert seg.audio_stop - seg.audio_start == (
            (seg.latent_frames * stride + left + ahead) * SPF
        )  # the windows of all its latent frames, contiguous


def test_short_and_empty_audio() -> None:
    assert plan_segments(0, TINY) == []
    one = plan_segments(1, TINY)
    assert len(one) == 1 and list(one[0].frame_pts) == [0]
    # The first segment continues the still history (the reference over silence: zeros).
    history = TINY.segment.motion_latents * TINY.time.vae_temporal_stride
    assert one[0].motion_latents == TINY.segment.motion_latents
    assert one[0].audio_start == -(history + TINY.audio.left_context_frames) * SPF


def test_live_segments_continue_the_finite_plan() -> None:
    plan = plan_segments(16_000 * 3, TINY)
    live = iter_segments(TINY)
    for seg in plan[:-1]:
        assert next(live) == seg
    assert plan[1].motion_latents == TINY.segment.motion_latents
