"""Latent frames that join (generation/joins.py): a step between latent frames is spread over the
next one's frames, its last frame is the decoder's, and what does not change stays put."""

from __future__ import annotations

import pytest
import torch

from engine.generation.joins import LatentJoins


def test_a_step_is_spread_over_the_next_latent_frame_and_ends_on_the_decoders_frame() -> None:
    joins = LatentJoins(stride=4)
    first = torch.zeros(4, 3, 2, 2)
    torch.testing.assert_close(joins.apply(first), first)  # nothing shown before it
    step = torch.ones(8, 3, 2, 2)  # the next two latent frames show 1 everywhere
    out = joins.apply(step)
    assert out[:4, 0, 0, 0].tolist() == [0.25, 0.5, 0.75, 1.0]  # from 0 to 1 in four frames
    torch.testing.assert_close(out[4:], step[4:])  # no step between the two: as decoded
    changes = (out[1:] - out[:-1]).abs().mean((1, 2, 3))
    assert changes[:3].max() <= 0.25 + 1e-6  # no single jump


def test_the_join_carries_over_calls_and_leaves_still_frames_alone() -> None:
    g = torch.Generator().manual_seed(0)
    picture = torch.rand(1, 3, 4, 4, generator=g).expand(8, -1, -1, -1)
    joins = LatentJoins(stride=4)
    for _ in range(3):
        torch.testing.assert_close(joins.apply(picture), picture)


def test_frames_must_be_whole_latent_frames() -> None:
    with pytest.raises(ValueError, match="not whole latent frames of 4"):
        LatentJoins(stride=4).apply(torch.zeros(6, 3, 2, 2))
