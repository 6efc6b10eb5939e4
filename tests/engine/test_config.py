import dataclasses

import pytest

from engine.config import Config, DiTConfig, Resolution
from engine.exceptions import ConfigError
from engine.presets import PRESETS, get_preset


def test_paper_preset_matches_the_method() -> None:
    c = get_preset("paper")
    for dit in (c.lr_a2v, c.refiner):
        assert (dit.width, dit.depth, dit.heads, dit.head_dim) == (1536, 30, 12, 128)
    assert (c.lr.width, c.lr.height, c.hr.width, c.hr.height) == (640, 352, 1280, 720)
    assert c.latent_channels == 16


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_derived_sizes_follow_the_time_base(name: str) -> None:
    c = get_preset(name)
    tb = c.time
    assert tb.samples_per_frame * tb.fps == tb.sample_rate
    assert c.samples_per_latent == tb.samples_per_frame * tb.vae_temporal_stride
    h, w = c.lr_latent_grid
    assert (h * tb.vae_spatial_stride, w * tb.vae_spatial_stride) == (c.lr.height, c.lr.width)
    ph, pw = c.lr_a2v.patch[1:]
    assert c.lr_tokens_per_latent == (h // ph) * (w // pw)
    assert c.lr_segment_tokens == c.lr_tokens_per_latent * c.lr_segment_latents
    assert c.audio_tokens_per_latent == (
        tb.vae_temporal_stride + c.audio.left_context_frames + c.audio.lookahead_frames
    )
    assert sum(c.lr_a2v.rope_split) == c.lr_a2v.head_dim
    assert all(part % 2 == 0 for part in c.lr_a2v.rope_split)


def test_time_base_latent_frames() -> None:
    tb = get_preset("tiny").time
    assert tb.samples_per_frame == 640
    assert tb.latent_frames_for(1) == 1
    assert tb.latent_frames_for(9) == 3
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        tb.latent_frames_for(8)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trips_through_dict(name: str) -> None:
    c = get_preset(name)
    assert Config.from_dict(c.to_dict()) == c


def test_from_dict_rejects_unknown_fields() -> None:
    data = get_preset("tiny").to_dict()
    data["lr_a2v"]["wdith"] = 3
    with pytest.raises(ConfigError, match=r"config\.lr_a2v: unknown fields \['wdith'\]"):
        Config.from_dict(data)


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="tiny, small, paper"):
        get_preset("huge")


def test_resolution_must_fit_vae_and_patch() -> None:
    with pytest.raises(ConfigError, match="multiple of 16x16"):
        dataclasses.replace(get_preset("tiny"), hr=Resolution(320, 180))


def test_audio_lead_is_whole_frames_ahead() -> None:
    tiny = get_preset("tiny")
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="audio_lead_frames must be a whole number >= 0"):
            dataclasses.replace(tiny.segment, audio_lead_frames=bad)
    lead = dataclasses.replace(tiny, segment=dataclasses.replace(tiny.segment, audio_lead_frames=2))
    assert lead.audio_wait_frames == tiny.audio_wait_frames + 2 == tiny.audio.lookahead_frames + 2


def test_heads_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        DiTConfig(width=130, depth=1, heads=4)


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("tiny").lr_a2v.width = 3  # type: ignore[misc]
