"""The low-res stage's sampler: several one-step noise draws (antithetic pairs), averaged, made as one
batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.audio.stream import AudioFeatureStream
from engine.config import Config
from engine.exceptions import ConfigError
from engine.flow import euler_sample, sampling_times
from engine.models.lr_a2v import LRConditions
from engine.models.text import tokenize
from engine.parts import Parts
from engine.streaming.segments import segment
from engine.streaming.stages import GenerationSettings, LowResStage, Reference
from tests.factories import micro_config, randomize_

MICRO = micro_config()


@pytest.fixture(scope="module")
def parts() -> Parts:
    parts = Parts.random(MICRO, seed=3)
    randomize_(parts.lr_a2v, std=0.1)  # a fresh LR-A2V ignores the noise and its conditions
    return parts


def _setup(parts: Parts, **settings: int) -> tuple[LowResStage, torch.Tensor, Reference]:
    cfg = parts.config
    g = torch.Generator().manual_seed(0)  # every stage of a test sees the same picture and sound
    image = torch.randint(0, 256, (3, cfg.hr.height, cfg.hr.width), dtype=torch.uint8, generator=g)
    reference = Reference.encode(parts, image)
    features = AudioFeatureStream(parts.audio, cfg)
    features.push(torch.randn(cfg.time.samples_per_frame * 12, generator=g) * 0.1)
    features.finish()
    audio = features.windows(segment(0, cfg))
    stage = LowResStage(parts, reference, GenerationSettings.from_config(cfg, seed=5, **settings))
    return stage, audio, reference


def test_draws_are_the_mean_of_one_step_samples_from_the_sessions_noise(parts: Parts) -> None:
    cfg = parts.config
    stage, audio, reference = _setup(parts, lr_steps=1, lr_draws=3)
    averaged = stage.generate(segment(0, cfg), audio)

    # The same three noise draws, each sampled alone with one Euler step: two from the session's
    # generator, then the first one's antithetic twin.
    C, (h, w) = cfg.latent_channels, cfg.lr_latent_grid
    fresh = torch.randn(2, C, cfg.segment.new_latents, h, w, generator=torch.Generator().manual_seed(5))
    noise = torch.cat([fresh, -fresh[:1]])
    cond = LRConditions(
        prefix=reference.lr_prefix, motion=reference.lr_still, audio=audio, text=tokenize([None], cfg.text)
    )
    velocity = parts.lr_a2v.velocity(cond, parts.lr_a2v.guidance())
    times = sampling_times(1, cfg.flow.lr_time_shift)
    alone = [euler_sample(velocity, noise[i : i + 1], times) for i in range(3)]
    assert averaged.shape == alone[0].shape
    torch.testing.assert_close(averaged, torch.stack(alone).mean(0), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(averaged, alone[0], atol=1e-3)  # the draws differ
    torch.testing.assert_close(stage.motion, averaged[:, :, -cfg.segment.motion_latents :])  # carried on

    # Two draws are one antithetic pair: the noise itself cancels, the mean velocity is left.
    pair, _, _ = _setup(parts, lr_steps=1, lr_draws=2)
    t = torch.zeros(1)
    mean_velocity = (velocity(fresh[:1], t) + velocity(-fresh[:1], t)) / 2
    paired = pair.generate(segment(0, cfg), audio)
    torch.testing.assert_close(paired, mean_velocity, atol=1e-5, rtol=1e-4)
    assert paired.abs().mean() > 0.05 and not torch.allclose(paired, alone[0], atol=1e-3)

    # One draw is the plain one-step sample of the first draw (what the engine did before draws).
    single, _, _ = _setup(parts, lr_steps=1, lr_draws=1)
    torch.testing.assert_close(single.generate(segment(0, cfg), audio), alone[0], atol=1e-5, rtol=1e-4)


def test_draws_only_average_one_step_samples(parts: Parts) -> None:
    cfg = parts.config
    several, audio, _ = _setup(parts, lr_steps=1, lr_draws=4)
    one, _, _ = _setup(parts, lr_steps=1, lr_draws=1)
    # Asked for two steps (a render's --steps, or a level of the degrade policy), a stage samples
    # one draw, whatever its setting.
    torch.testing.assert_close(
        several.generate(segment(0, cfg), audio, steps=2), one.generate(segment(0, cfg), audio, steps=2)
    )
    # A segment's draws can be lowered (the degrade policy's first step) without a new stage.
    several, _, _ = _setup(parts, lr_steps=1, lr_draws=4)
    one, _, _ = _setup(parts, lr_steps=1, lr_draws=1)
    torch.testing.assert_close(
        several.generate(segment(0, cfg), audio, draws=1), one.generate(segment(0, cfg), audio)
    )


def test_bad_draws_are_refused_in_the_config_and_in_overrides() -> None:
    flow = MICRO.flow
    with pytest.raises(ConfigError, match="lr_draws must be >= 1"):
        dataclasses.replace(flow, lr_draws=0)
    with pytest.raises(ConfigError, match="needs lr_steps = 1"):
        dataclasses.replace(flow, lr_steps=2, lr_draws=4)
    round_trip = MICRO.replace(flow=dataclasses.replace(flow, lr_steps=1, lr_draws=4))
    assert Config.from_dict(round_trip.to_dict()).flow.lr_draws == 4
    with pytest.raises(ValueError, match="lr_draws must be >= 1"):
        GenerationSettings.from_config(MICRO, lr_draws=0)  # a session's or a render's override
