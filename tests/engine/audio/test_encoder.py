import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audio.encoder import AudioEncoder, StreamingAudioEncoder
from engine.presets import get_preset
from tests.factories import randomize_

TINY = get_preset("tiny")
ENCODER = randomize_(AudioEncoder(TINY), std=0.05).eval()


def _speechlike(samples: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(samples) / 16_000
    envelope = (torch.sin(2 * torch.pi * 3 * t) > 0).float()
    return envelope * (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(samples, generator=g))


def test_one_feature_per_video_frame() -> None:
    with torch.no_grad():
        out = ENCODER.encode_audio(_speechlike(16_000)[None])
    assert out.shape == (1, 25, TINY.audio.feature_dim)


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=30))
def test_streaming_equals_offline(chunks: list[int]) -> None:
    audio = _speechlike(sum(chunks))
    with torch.no_grad():
        offline = ENCODER.encode_audio(audio[None])[0]
    stream = StreamingAudioEncoder(ENCODER)
    pieces, start = [], 0
    for size in chunks:
        pieces.append(stream.push(audio[start : start + size]))
        start += size
    streamed = torch.cat(pieces)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-4)


def test_encoder_is_causal() -> None:
    audio = _speechlike(16_000)
    changed = audio.clone()
    changed[8000:] = 0  # from video frame 12.5 on
    with torch.no_grad():
        a = ENCODER.encode_audio(audio[None])[0]
        b = ENCODER.encode_audio(changed[None])[0]
    torch.testing.assert_close(a[:12], b[:12])
    assert not torch.allclose(a[13:], b[13:])
