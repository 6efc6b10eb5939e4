import pytest
import torch

from engine.exceptions import ConfigError, InputShapeError
from engine.models.vae import (
    LATENT_STATS_MOMENTUM,
    Down,
    Up,
    VideoAutoencoder,
    _match_channels,
    decoder_flops_per_frame,
)
from engine.presets import get_preset
from tests.factories import randomize_

TINY = get_preset("tiny")
TOL = {"atol": 1e-5, "rtol": 1e-5}  # batched vs chunked convolutions may round differently


@pytest.fixture(scope="module", params=["tiny", "small"])  # spatial /4 and /8
def vae(request: pytest.FixtureRequest) -> VideoAutoencoder:
    return randomize_(VideoAutoencoder(get_preset(request.param)), std=0.02).eval()


def test_shapes_follow_the_time_base(vae: VideoAutoencoder) -> None:
    s, c = vae.config.time.vae_spatial_stride, vae.config.latent_channels
    frames = torch.rand(2, 3, 9, 48, 64)
    latents = vae.encode(frames)
    assert latents.shape == (2, c, 3, 48 // s, 64 // s)
    assert vae.decode(latents).shape == frames.shape
    assert vae.encode_image(torch.rand(1, 3, 48, 64)).shape == (1, c, 1, 48 // s, 64 // s)
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        vae.encode(torch.rand(1, 3, 8, 48, 64))
    with pytest.raises(InputShapeError, match=f"multiples of {s}"):
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
    latents = torch.randn(1, vae.config.latent_channels, 4, 4, 6)
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
    latents = torch.randn(1, vae.config.latent_channels, 3, 4, 6)
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


def test_still_latent_is_what_a_held_picture_settles_to(vae: VideoAutoencoder) -> None:
    """From the second latent after the prefix on, a still video's latents are all one latent."""
    image = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        held = vae.encode_still(image, 4)
        still = vae.still_latent(image)
    s = vae.config.time.vae_spatial_stride
    assert still.shape == (2, vae.config.latent_channels, 1, 32 // s, 64 // s)
    for k in (2, 3, 4):
        torch.testing.assert_close(held[:, :, k : k + 1], still)
    assert not torch.allclose(held[:, :, 1:2], still)  # the first one still remembers the prefix


def test_resampling_shortcuts_rearrange_without_loss() -> None:
    """With their convs zeroed, a /2 stage into 4x the channels and a x2 stage back are exact
    inverses: the shortcuts alone carry every pixel (what lets the convs learn a residual)."""
    down, up = Down(3, 12), Up(12, 3)
    for conv in (down.conv, up.conv):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    image = torch.rand(2, 3, 8, 12)
    assert down(image).shape == (2, 12, 4, 6)
    torch.testing.assert_close(up(down(image)), image)
    # to fewer channels the shortcut averages equal groups, to more it repeats them
    averaged = _match_channels(torch.arange(8.0).view(1, 8, 1, 1), 2)
    torch.testing.assert_close(averaged.flatten(), torch.tensor([1.5, 5.5]))
    assert _match_channels(torch.arange(2.0).view(1, 2, 1, 1), 4).flatten().tolist() == [0, 0, 1, 1]


def test_autoencoder_channels_must_divide_for_the_shortcuts() -> None:
    with pytest.raises(ConfigError, match="shortcut from 64 to 12"):
        TINY.replace(latent_channels=12)


def test_latents_are_normalised_with_running_statistics() -> None:
    """Training batches set the per-channel statistics (the first directly, later ones by a running
    average); encode gives zero-mean unit-variance latents with them and decode undoes it."""
    vae = randomize_(VideoAutoencoder(TINY), std=0.02)
    first, second = torch.rand(2, 3, 5, 32, 48), torch.rand(2, 3, 5, 32, 48) * 0.5
    with torch.no_grad():
        raw = vae.encoder.encode(first)[0]
        vae.train()
        normalised = vae.encode(first)
    assert int(vae.latent_batches) == 1
    torch.testing.assert_close(vae.latent_mean, raw.mean((0, 2, 3, 4)))
    zeros = torch.zeros(TINY.latent_channels)
    torch.testing.assert_close(normalised.mean((0, 2, 3, 4)), zeros, atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.std((0, 2, 3, 4)), torch.ones(TINY.latent_channels))
    before = vae.latent_mean.clone()
    with torch.no_grad():
        raw2 = vae.encoder.encode(second)[0]
        vae.encode(second)
    torch.testing.assert_close(vae.latent_mean, before.lerp(raw2.mean((0, 2, 3, 4)), LATENT_STATS_MOMENTUM))
    vae.eval()
    stats = vae.latent_mean.clone()
    with torch.no_grad():
        latents = vae.encode(first)
        torch.testing.assert_close(vae.decode(latents), vae.decoder.decode(raw)[0])
    torch.testing.assert_close(vae.latent_mean, stats)  # evaluation does not move them
    assert not torch.allclose(latents, raw)
