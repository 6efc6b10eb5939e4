"""The two stages of a session: fresh parts stream the reference, still; one LR step is the estimate
from the session's noise."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.audio.stream import AudioFeatureStream
from engine.generation.segments import segment
from engine.generation.stages import (
    GenerationChoices,
    GenerationSettings,
    LowResStage,
    Reference,
    RefineStage,
    to_uint8,
)
from engine.models.lr_a2v import LRConditions
from engine.models.refiner import lr_on_hr_grid
from engine.models.text import tokenize
from engine.parts import Parts
from tests.factories import micro_config, randomize_

MICRO = micro_config()


def _inputs(parts: Parts, segments: int = 3) -> tuple[Reference, AudioFeatureStream]:
    cfg = parts.config
    g = torch.Generator().manual_seed(0)  # every stage of a test sees the same picture and sound
    image = torch.randint(0, 256, (3, cfg.hr.height, cfg.hr.width), dtype=torch.uint8, generator=g)
    features = AudioFeatureStream(parts.audio, cfg)
    features.push(torch.randn(cfg.time.samples_per_frame * 8 * (segments + 1), generator=g) * 0.1)
    features.finish()
    return Reference.encode(parts, image), features


def _stages(parts: Parts, steps: int) -> tuple[Reference, AudioFeatureStream, LowResStage, RefineStage]:
    reference, features = _inputs(parts)
    settings = GenerationSettings.from_config(parts.config, GenerationChoices(lr_steps=steps, seed=7))
    low, refine = LowResStage(parts, reference, settings), RefineStage(parts, reference, settings)
    return reference, features, low, refine


@pytest.mark.parametrize("steps", [1, 3])
def test_fresh_parts_stream_the_reference_still(steps: int) -> None:
    """Untrained generators show the picture, not noise: every LR latent is the still reference, the
    refiner's latents are the LR latents on the HR grid, and with the reference's detail put back
    where nothing moved (generation/detail.py) the frames are the picture itself, at both sizes."""
    reference, features, low, refine = _stages(Parts.random(MICRO, seed=1), steps)
    for i in range(3):
        seg = segment(i, MICRO)
        decoded = low.run(seg, features.windows(seg))
        still = reference.lr_still.expand_as(decoded.latents)
        torch.testing.assert_close(decoded.latents, still, atol=1e-5, rtol=1e-5)
        # Up to the float rounding of the latents (1e-7), which a random decoder amplifies.
        picture = reference.lr_picture.expand_as(decoded.frames)
        torch.testing.assert_close(decoded.frames, picture, atol=5e-3, rtol=0)
        frames = refine.run(decoded)
        hr_picture = to_uint8(reference.hr_picture.expand(frames.shape[0], -1, -1, -1))
        assert (frames.int() - hr_picture.int()).abs().max() <= 1


def test_without_the_detail_and_the_joins_the_frames_are_the_decoders() -> None:
    """segment.detail_tolerance 0, smooth_joins off: the HR frames are the LR latents on the HR
    grid, decoded."""
    plain = dataclasses.replace(MICRO.segment, detail_tolerance=0.0, smooth_joins=False)
    config = MICRO.replace(segment=plain)
    parts = Parts.random(config, seed=1)
    reference, features, low, refine = _stages(parts, 1)
    upscaled = []
    for i in range(3):
        seg = segment(i, config)
        decoded = low.run(seg, features.windows(seg))
        frames = refine.run(decoded)
        upscaled.append(lr_on_hr_grid(decoded.latents, config))
        expected = parts.vae.decode(torch.cat([reference.hr_prefix, *upscaled], dim=2))[0, :, 1:]
        last = to_uint8(expected.transpose(0, 1)[-frames.shape[0] :])
        assert (frames.int() - last.int()).abs().max() <= 1
        # a random decoder is far from the picture: the detail is what made them equal above
        picture = to_uint8(reference.hr_picture.expand(frames.shape[0], -1, -1, -1))
        assert (frames.float() - picture.float()).abs().mean() > 5


def test_one_step_is_the_guided_estimate_from_the_sessions_noise() -> None:
    parts = Parts.random(MICRO, seed=3)
    randomize_(parts.lr_a2v, std=0.1)  # a fresh LR-A2V ignores the noise and its conditions
    reference, features = _inputs(parts)
    seg = segment(0, MICRO)
    audio = features.windows(seg)
    stage = LowResStage(
        parts, reference, GenerationSettings.from_config(MICRO, GenerationChoices(lr_steps=1, seed=5))
    )
    latents = stage.generate(seg, audio)

    C, (h, w) = MICRO.latent_channels, MICRO.lr_latent_grid
    noise = torch.randn(1, C, MICRO.segment.new_latents, h, w, generator=torch.Generator().manual_seed(5))
    cond = LRConditions(
        prefix=reference.lr_prefix,
        motion=reference.lr_history,
        audio=audio,
        text=tokenize([None], MICRO.text),
        still=reference.lr_still,
    )
    with torch.no_grad():
        velocity = parts.lr_a2v.velocity(cond, parts.lr_a2v.guidance())(noise, torch.zeros(1))
    torch.testing.assert_close(latents, noise + velocity)  # one Euler step from t = 0
    assert not torch.allclose(latents, reference.lr_still.expand_as(latents), atol=1e-3)


def test_bad_step_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="lr_steps must be >= 1"):
        GenerationChoices(lr_steps=0)  # a session's or a render's choice


def test_a_new_picture_is_where_the_next_estimates_start() -> None:
    """set_reference moves the still latent too: a fresh LR-A2V then streams the new picture."""
    parts = Parts.random(MICRO, seed=1)
    first, features = _inputs(parts)
    image = torch.full((3, MICRO.hr.height, MICRO.hr.width), 200, dtype=torch.uint8)
    second = Reference.encode(parts, image)
    low = LowResStage(parts, first, GenerationSettings.from_config(MICRO))
    low.run(segment(0, MICRO), features.windows(segment(0, MICRO)))
    low.set_reference(second)
    latents = low.generate(segment(1, MICRO), features.windows(segment(1, MICRO)))
    torch.testing.assert_close(latents, second.lr_still.expand_as(latents), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("feedback", [1.0, 0.5, 0.0])
def test_the_next_segment_sees_its_motion_fed_back_toward_the_still_picture(feedback: float) -> None:
    """segment.motion_feedback f: the motion latents carried over are still + f (generated - still),
    so an error the model adds decays by f every segment instead of compounding."""
    config = MICRO.replace(segment=dataclasses.replace(MICRO.segment, motion_feedback=feedback))
    parts = Parts.random(config, seed=3)
    randomize_(parts.lr_a2v, std=0.1)  # it makes frames that are not the still picture
    reference, features = _inputs(parts)
    stage = LowResStage(parts, reference, GenerationSettings.from_config(config))
    latents = stage.generate(segment(0, config), features.windows(segment(0, config)))
    carried = latents[:, :, -config.segment.motion_latents :]
    still = reference.lr_still
    torch.testing.assert_close(stage.motion, still + feedback * (carried - still))


def _trained_looking_parts(device: str, precision: str) -> Parts:
    parts = Parts.random(MICRO, seed=3)
    randomize_(parts.lr_a2v, std=0.05)  # fresh generators output the still picture whatever the precision
    randomize_(parts.refiner, std=0.05, seed=1)
    for name in ("lr_a2v", "refiner", "vae", "audio", "pose"):
        getattr(parts, name).to(device)
    return parts.use_precision(precision)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bf16_generators_make_the_float32_segments_within_rounding(device: str) -> None:
    """--precision bf16 holds the generators in bfloat16 (the other parts stay float32) and makes
    the same segments as float32 within bf16's rounding, through the cached-context path too."""
    runs = {}
    for precision in ("fp32", "bf16"):
        parts = _trained_looking_parts(device, precision)
        reference, features = _inputs(parts)
        settings = GenerationSettings.from_config(MICRO, GenerationChoices(lr_steps=3, seed=7))
        low, refine = LowResStage(parts, reference, settings), RefineStage(parts, reference, settings)
        outputs = []
        for i in range(2):
            seg = segment(i, MICRO)
            decoded = low.run(seg, features.windows(seg).to(device))
            outputs.append((decoded.latents.float().cpu(), refine.run(decoded)))
        runs[precision] = (parts, reference.lr_still.cpu(), outputs)
    parts, still, fp32 = runs["fp32"]
    assert parts.dtype == torch.float32
    bf16_parts, _, bf16 = runs["bf16"]
    assert {p.dtype for p in bf16_parts.lr_a2v.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16_parts.refiner.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16_parts.vae.parameters()} == {torch.float32}
    for (latents32, frames32), (latents16, frames16) in zip(fp32, bf16, strict=True):
        assert latents16.dtype == torch.float32  # the sampler and the decoders see float32
        motion = (latents32 - still).abs().mean()  # what the generator added to the still picture
        error = (latents16 - latents32).abs().mean()
        assert 0 < error < 0.02 * motion, (float(error), float(motion))
        assert (frames16.float() - frames32.float()).abs().mean() < 1  # grey level


def test_auto_precision_is_float32_on_the_cpu_and_bad_names_are_refused() -> None:
    parts = Parts.random(MICRO).use_precision("auto")
    assert parts.dtype == torch.float32
    assert {p.dtype for p in parts.lr_a2v.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="choose one of auto, bf16, fp32"):
        parts.use_precision("fp16")


def _segments(parts: Parts, steps: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    reference, features = _inputs(parts)
    settings = GenerationSettings.from_config(MICRO, GenerationChoices(lr_steps=steps, seed=7))
    low, refine = LowResStage(parts, reference, settings), RefineStage(parts, reference, settings)
    device = parts.device
    out = []
    for i in range(count):
        seg = segment(i, MICRO)
        if parts.device.type == "cpu":  # the refiner's blocks would be one more compile on a CPU
            out.append((low.generate(seg, features.windows(seg)), None))
        else:
            decoded = low.run(seg, features.windows(seg).to(device))
            out.append((decoded.latents.cpu(), refine.run(decoded)))
    return out


@pytest.mark.parametrize(
    ("device", "steps", "count"), [("cpu", 1, 1), pytest.param("cuda", 3, 2, marks=pytest.mark.gpu)]
)
def test_compiled_generators_make_the_eager_segments(device: str, steps: int, count: int) -> None:
    """--compile (torch.compile over the blocks, our norm and RoPE kernels left to Inductor) makes
    the segments eager mode makes. On the CPU the blocks are traced as Inductor would get them, with
    fixed shapes, but not built into kernels: Inductor's C++ build of them takes 36 s from a cold
    cache on two cores (CI's every run); the GPU test builds and runs them."""
    eager = _segments(_trained_looking_parts(device, "auto"), steps, count)
    backend = "aot_eager" if device == "cpu" else "inductor"
    compiled_parts = _trained_looking_parts(device, "auto").compile(backend)
    compiled = _segments(compiled_parts, steps, count)
    assert compiled_parts.compiled
    assert compiled_parts.text_tokens(None).ids.shape[1] == 1 + MICRO.text.max_bytes  # one shape
    still = _inputs(compiled_parts)[0].lr_still.cpu()
    for (latents_e, frames_e), (latents_c, frames_c) in zip(eager, compiled, strict=True):
        # Fused kernels round differently: in float32 (the CPU) within 1e-6, in bf16 within its
        # rounding, measured against what the generator added to the still picture.
        error, motion = (latents_c - latents_e).abs().mean(), (latents_e - still).abs().mean()
        assert error < (1e-6 if device == "cpu" else 0.02 * motion), (float(error), float(motion))
        if frames_e is not None:
            assert (frames_c.float() - frames_e.float()).abs().mean() < 1


def test_a_prompt_padded_to_full_length_changes_nothing() -> None:
    """Compiled parts pad every prompt to one length; the lengths mask the padding."""
    parts = _trained_looking_parts("cpu", "fp32")
    text = "a calm voice"
    short, full = (tokenize([text], MICRO.text, full_length=f) for f in (False, True))
    assert short.ids.shape[1] == 1 + len(text) and full.ids.shape[1] == 1 + MICRO.text.max_bytes
    torch.testing.assert_close(full.ids[:, : short.ids.shape[1]], short.ids)
    encoded_short, encoded_full = (parts.lr_a2v.text_encoder(t) for t in (short, full))
    torch.testing.assert_close(encoded_full[:, : short.ids.shape[1]], encoded_short, atol=1e-5, rtol=1e-5)
