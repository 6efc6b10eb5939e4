import pytest
import torch

from engine.config import get_preset
from engine.exceptions import ConfigError, InputShapeError
from engine.models.vae import VideoAutoencoder, decoder_flops_per_frame
from tests.factories import randomize_

TINY = get_preset("tiny")
TOL = {"atol": 1e-5, "rtol": 1e-5}  # batched vs chunked convolutions may round differently


@pytest.fixture(scope="module")
def vae() -> VideoAutoencoder:
    return randomize_(VideoAutoencoder(TINY), std=0.02).eval()


def test_shapes_follow_the_time_base(vae: VideoAutoencoder) -> None:
    frames = torch.rand(2, 3, 9, 48, 64)
    latents = vae.encode(frames)
    assert latents.shape == (2, TINY.latent_channels, 3, 6, 8)
    assert vae.decode(latents).shape == frames.shape
    assert vae.encode_image(torch.rand(1, 3, 48, 64)).shape == (1, TINY.latent_channels, 1, 6, 8)
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        vae.encode(torch.rand(1, 3, 8, 48, 64))
    with pytest.raises(InputShapeError, match="multiples of 8"):
        vae.encode(torch.rand(1, 3, 5, 50, 64))


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[1, 4, 4, 4], [3, 2, 8], [13], [1, 1, 1, 1, 1, 8]])
def test_chunked_encode_equals_whole(vae: VideoAutoencoder, chunks: list[int]) -> None:
    frames = torch.rand(1, 3, 13, 32, 48)
    whole = vae.encode(frames)
    state, parts, start = None, [], 0
    for size in chunks:
        latents, state = vae.encoder.encode(frames[:, :, start : start + size], state)
        parts.append(latents)
        start += size
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, **TOL)


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[1, 1, 1, 1], [2, 2], [1, 3], [4]])
def test_chunked_decode_equals_whole(vae: VideoAutoencoder, chunks: list[int]) -> None:
    latents = torch.randn(1, TINY.latent_channels, 4, 4, 6)
    whole = vae.decode(latents)
    state, parts, start = None, [], 0
    for size in chunks:
        frames, state = vae.decoder.decode(latents[:, :, start : start + size], state)
        parts.append(frames)
        start += size
    assert whole.shape[2] == 1 + 4 * 3
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, **TOL)


@torch.no_grad()
def test_decoding_is_causal(vae: VideoAutoencoder) -> None:
    latents = torch.randn(1, TINY.latent_channels, 3, 4, 6)
    changed = latents.clone()
    changed[:, :, 2] += 1
    a, b = vae.decode(latents), vae.decode(changed)
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5])
    assert not torch.allclose(a[:, :, 5:], b[:, :, 5:])


def test_decoder_flops_are_counted() -> None:
    flops = decoder_flops_per_frame(get_preset("paper"), 1280, 720)
    assert 1e9 < flops < 1e12


def test_still_video_starts_with_the_image_prefix(vae: VideoAutoencoder) -> None:
    """The engine's still history: the prefix as encode_image gives it, then latents of the same
    picture held for 4 frames each."""
    image = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        still = vae.encode_still(image, 2)
        prefix = vae.encode_image(image)
        held = vae.encode(image[:, :, None].expand(-1, -1, 9, -1, -1))
    assert still.shape[2] == 3
    torch.testing.assert_close(still[:, :, :1], prefix)
    torch.testing.assert_close(still, held)
