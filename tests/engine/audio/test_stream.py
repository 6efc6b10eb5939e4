"""The feature stream of a session: windows equal the offline ones, memory stays bounded."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audio.encoder import AudioEncoder
from engine.audio.stream import AudioFeatureStream
from engine.audio.windows import latent_audio_windows
from engine.generation.segments import plan_segments
from engine.presets import get_preset
from tests.factories import randomize_

TINY = get_preset("tiny")
ENCODER = randomize_(AudioEncoder(TINY), std=0.05).eval()


@settings(max_examples=15, deadline=None)
@given(
    samples=st.integers(min_value=1, max_value=40_000),
    piece=st.integers(min_value=1, max_value=5_000),
    lead=st.integers(min_value=0, max_value=3),
)
def test_windows_equal_offline_windows_of_the_padded_audio(samples: int, piece: int, lead: int) -> None:
    """Each latent frame's window: its own frames' audio, `lead` frames later, as offline."""
    config = dataclasses.replace(TINY, segment=dataclasses.replace(TINY.segment, audio_lead_frames=lead))
    audio = torch.randn(samples, generator=torch.Generator().manual_seed(samples)) * 0.1
    stream = AudioFeatureStream(ENCODER, config)
    spf = TINY.time.samples_per_frame
    padded = torch.nn.functional.pad(audio, (0, -samples % spf))  # the last partial frame: silence
    with torch.no_grad():
        offline = ENCODER.encode_audio(padded[None])
    pushed = 0
    for seg in plan_segments(samples, config):
        while pushed < min(seg.audio_stop, samples):  # as live: read up to the segment's lookahead
            stream.push(audio[pushed : pushed + piece].numpy())
            pushed = min(pushed + piece, samples)
        if pushed == samples and not stream.finished:
            stream.finish()
        with torch.no_grad():
            got = stream.windows(seg)
        want = latent_audio_windows(offline, seg.context_first_frame + lead, seg.latent_frames, TINY)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert stream.samples == samples
    # Released as segments move on: only about one window of features is kept.
    assert stream.features.shape[0] <= TINY.segment_video_frames * 2 + TINY.audio_tokens_per_latent


def test_released_audio_cannot_be_asked_for_again() -> None:
    stream = AudioFeatureStream(ENCODER, TINY)
    stream.push(torch.zeros(TINY.time.samples_per_frame * 60).numpy())
    segments = plan_segments(TINY.time.samples_per_frame * 60, TINY)
    stream.windows(segments[3])
    with pytest.raises(ValueError, match="already released"):
        stream.windows(segments[1])
