import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audio.features import StreamingLogMel, log_mel, mel_filterbank
from engine.presets import get_preset

CFG = get_preset("tiny")


def _audio(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16_000)) / 16_000
    return 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(t.shape, generator=g)


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40))
def test_streaming_equals_offline(chunks: list[int]) -> None:
    audio = _audio(sum(chunks) / 16_000)
    stream = StreamingLogMel(CFG.audio, CFG.time)
    pieces, start = [], 0
    for size in chunks:
        pieces.append(stream.push(audio[start : start + size]))
        start += size
    streamed = torch.cat(pieces)
    offline = log_mel(audio, CFG.audio, CFG.time)
    assert streamed.shape == offline.shape == (len(audio) // CFG.audio.mel_hop, CFG.audio.mel_bins)
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-5)


def test_frames_per_video_frame_and_tone_lands_in_its_band() -> None:
    feats = log_mel(_audio(1.0), CFG.audio, CFG.time)
    assert feats.shape[0] == 25 * CFG.mel_frames_per_video_frame
    bank = mel_filterbank(CFG.audio.mel_bins, 512, 16_000)
    freqs = np.linspace(0, 8000, 257)
    band_of_440 = int(bank[:, int(np.argmin(np.abs(freqs - 440)))].argmax())
    assert int(feats[10:].mean(0).argmax()) == band_of_440


def test_causal_frames_ignore_the_future() -> None:
    audio = _audio(0.5)
    changed = audio.clone()
    changed[4000:] = 0
    a = log_mel(audio, CFG.audio, CFG.time)
    b = log_mel(changed, CFG.audio, CFG.time)
    torch.testing.assert_close(a[: 4000 // CFG.audio.mel_hop], b[: 4000 // CFG.audio.mel_hop])
