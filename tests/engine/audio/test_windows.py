import torch

from engine.audio.windows import latent_audio_windows
from engine.presets import get_preset

TINY = get_preset("tiny")  # stride 4, left context 2, lookahead 2 -> 8 features per window


def test_windows_cover_own_frames_plus_context() -> None:
    frames = torch.arange(40, dtype=torch.float32).view(1, 40, 1).expand(1, 40, 3)
    windows = latent_audio_windows(frames, first_frame=8, latents=3, config=TINY)
    assert windows.shape == (1, 3, TINY.audio_tokens_per_latent, 3)
    # latent j covers video frames 8 + 4j .. 8 + 4j + 3, plus 2 before and 2 after
    for j in range(3):
        expected = torch.arange(8 + 4 * j - 2, 8 + 4 * j + 4 + 2, dtype=torch.float32)
        assert torch.equal(windows[0, j, :, 0], expected)


def test_windows_zero_pad_outside_the_stream() -> None:
    frames = torch.ones(2, 10, 4)
    windows = latent_audio_windows(frames, first_frame=0, latents=3, config=TINY)
    assert torch.equal(windows[:, 0, :2], torch.zeros(2, 2, 4))  # before frame 0
    assert torch.equal(windows[:, 0, 2:], torch.ones(2, 6, 4))
    # the last window spans frames 6..15 of which 10.. are not heard yet
    assert torch.equal(windows[:, 2, :4], torch.ones(2, 4, 4))
    assert torch.equal(windows[:, 2, 4:], torch.zeros(2, 4, 4))
