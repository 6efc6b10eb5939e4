"""The measures of a trained bundle: lip sync and identity over long takes."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.clip import make_clip
from engine.evaluation import REGIONS, correlate, identity_drift, lip_sync, lip_sync_ceiling, region_colours
from engine.parts import DEFAULT_BUNDLE, Parts
from engine.showcase import gif, photo_sheet, sheet, speak
from tests.factories import micro_config

PHOTOS = Path(__file__).parents[1] / "fixtures" / "photos"


def test_region_colours_read_the_right_places() -> None:
    clip = make_clip(32, 0.2, 320, 176)
    frames = clip.frames.float() / 255
    colours = region_colours(frames, clip.points)
    assert colours.shape == (len(clip.frames), len(REGIONS), 3)
    painted = frames.clone()
    painted[:, :, :20, :40] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # the top-left background
    changed = region_colours(painted, clip.points) - colours
    assert changed[:, 2].abs().max() > 0.05 and changed[:, :2].abs().max() == 0


def test_lip_sync_and_identity_drift_run_on_a_bundle() -> None:
    parts = Parts.random(micro_config(), seed=1)
    sync = lip_sync(parts, characters=1, seconds=1.0)
    assert -1 <= sync.correlation <= 1 and abs(sync.lag_frames) <= 4 and sync.frames == 25
    drift = identity_drift(parts, seconds=2.0, reference_s=1.0)
    assert set(drift["max_deviation"]) == set(REGIONS) and len(drift["per_second"]) == 2
    assert all(math.isfinite(v) for v in drift["max_deviation"].values())


def test_correlate_finds_how_far_the_reading_trails() -> None:
    rng = np.random.default_rng(0)
    truths = [np.convolve(rng.random(300), np.ones(5) / 5, mode="same") for _ in range(3)]
    # Each reading trails its truth by 2 frames, at its own scale and offset (standardized away).
    reads = [np.r_[t[:2], t[:-2]] * (k + 1) + k + rng.normal(0, 0.01, len(t)) for k, t in enumerate(truths)]
    sync = correlate(reads, truths, max_lag=4)
    assert sync.lag_frames == 2 and sync.correlation > 0.95 > sync.correlation_at_zero
    assert sorted(sync.by_lag) == list(range(-4, 5))
    assert sync.by_lag[2] == sync.correlation == max(sync.by_lag.values())
    assert sync.by_lag[0] == sync.correlation_at_zero
    assert sync.frames == 900
    assert correlate(reads[:1], [rng.random(300)]).correlation < 0.3  # unrelated


def test_lip_sync_ceiling_runs_on_random_parts() -> None:
    ceiling = lip_sync_ceiling(Parts.random(micro_config(), seed=1), characters=1, seconds=1.0)
    assert set(ceiling) == {"rendered", "reconstructed"}
    assert all(-1 <= c.correlation <= 1 and c.frames == 24 for c in ceiling.values())  # whole latents


@pytest.mark.slow
def test_the_demo_reader_reads_rendered_mouths_and_the_autoencoder_loses_some() -> None:
    ceiling = lip_sync_ceiling(Parts.from_bundle(DEFAULT_BUNDLE), characters=2, seconds=4.0)
    rendered, reconstructed = ceiling["rendered"], ceiling["reconstructed"]
    assert rendered.correlation > 0.9 and abs(rendered.lag_frames) <= 1
    assert 0.5 < reconstructed.correlation < rendered.correlation


@pytest.mark.slow
def test_showcase_writes_a_gif_and_a_sheet(tmp_path: Path) -> None:
    parts = Parts.random(micro_config(), seed=1)
    video, generated, truth, picture, true_frames = speak(parts, 5, seconds=1.0)
    assert video.shape == true_frames.shape == (25, 32, 64, 3) and generated.shape == truth.shape == (25,)
    assert picture.shape == (3, 32, 64)
    gif(video, generated, truth, tmp_path / "demo.gif")
    sheet(parts, 2, tmp_path / "sheet.png", seconds=1.0)
    photo_sheet(parts, [PHOTOS / "astronaut.jpg"], tmp_path / "photos.png", seconds=1.0)
    for name in ("demo.gif", "sheet.png", "photos.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
