"""The reference's detail where the decoded frames did not move, the frames as generated where
they did (generation/detail.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.exceptions import ConfigError
from engine.generation.detail import DetailTransfer
from tests.factories import micro_config


def _transfer(reach: int = 2) -> tuple[DetailTransfer, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    picture = torch.rand(3, 32, 48, generator=g)
    # What a blurring decoder makes of it, a little different at each of 4 positions in a latent.
    blurred = torch.nn.functional.avg_pool2d(picture[None], 3, stride=1, padding=1, count_include_pad=False)
    still = blurred + 0.01 * torch.randn(4, 3, 32, 48, generator=g)
    return DetailTransfer(picture, still, tolerance=0.08, reach=reach), picture, still


def test_a_still_frame_becomes_the_picture_at_every_position() -> None:
    transfer, picture, still = _transfer()
    frames = still[torch.tensor([0, 1, 2, 3, 0, 1])]  # two latents' worth, in order
    torch.testing.assert_close(transfer.apply(frames), picture.expand(6, -1, -1, -1).clamp(0, 1))


def test_what_moved_stays_as_generated_and_the_rest_takes_the_picture() -> None:
    transfer, picture, still = _transfer(reach=2)
    frames = still.clone()
    frames[:, :, 10:20, 10:30] = 0.5 + 0.5 * (still[:, :, 10:20, 10:30] > 0.5)  # a mouth opened here
    out = transfer.apply(frames)
    torch.testing.assert_close(out[:, :, 10:20, 10:30], frames[:, :, 10:20, 10:30])
    # Beyond the reach and its softening (a block of 2 pixels each, and half a block of
    # interpolation), the picture's own pixels.
    torch.testing.assert_close(out[:, :, :5], picture[:, :5].expand(4, -1, -1, -1))
    torch.testing.assert_close(out[:, :, 25:], picture[:, 25:].expand(4, -1, -1, -1))
    weight = transfer.weight(frames, still)
    assert weight.min() == 0 and weight.max() == 1 and ((weight > 0) & (weight < 1)).any()  # a soft edge


def test_a_small_change_takes_part_of_the_detail() -> None:
    transfer, _, still = _transfer(reach=0)
    frames = (still + 0.04).clamp(0, 1)  # half the tolerance
    weight = transfer.weight(frames[:1], still[:1])
    inside = (still[0] + 0.04 <= 1).all(0)  # where the clamp did not cut the change
    torch.testing.assert_close(weight[0, 0][inside], torch.full_like(weight[0, 0][inside], 0.5))


def test_the_lead_frames_serve_the_first_latent_only() -> None:
    """The first latent after the prefix decodes differently (the decoder remembers the prefix):
    its still frames are the lead, used once."""
    _, picture, still = _transfer()
    lead = (still + 0.05).clamp(0, 1)
    transfer = DetailTransfer(picture, still, tolerance=0.08, lead=lead)
    first = transfer.apply(torch.cat([lead, still]))  # the stream's first two latents
    torch.testing.assert_close(first, picture.expand(8, -1, -1, -1))
    torch.testing.assert_close(transfer.apply(still), picture.expand(4, -1, -1, -1))
    assert (transfer.apply(lead) != picture).any()  # later, the lead is a change like any other


def test_shapes_and_the_tolerance_are_checked() -> None:
    with pytest.raises(ValueError, match="do not match the picture"):
        DetailTransfer(torch.rand(3, 8, 8), torch.rand(4, 3, 8, 9), tolerance=0.1)
    config = micro_config()
    with pytest.raises(ConfigError, match="detail_tolerance must be in"):
        dataclasses.replace(config.segment, detail_tolerance=2.0)
