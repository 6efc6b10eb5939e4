"""Both generators estimate clean latents from a picture: LR-A2V from the still reference, the refiner
from the LR latents on the HR grid. Fresh (adaLN-zero), they sample exactly that picture from any
noise with any number of steps, and a batch whose target is that picture costs no loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.config import AudioConfig, Config, DiTConfig, TextConfig
from engine.flow import euler_sample, sampling_times
from engine.media.image import cover
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner, lr_on_hr_grid
from engine.presets import PRESETS
from engine.training.steps import lr_a2v_step, refiner_step
from tests.factories import lr_batch, lr_conditions, refiner_batch, refiner_conditions


def narrow(config: Config) -> Config:
    """A preset's pictures, grids and time base with a narrow DiT and one new latent per segment:
    what the skip depends on, at a cost a CPU test can pay even for `paper`."""
    dit = DiTConfig(width=32, depth=1, heads=2, patch=config.lr_a2v.patch)
    segment = dataclasses.replace(config.segment, new_latents=1, motion_latents=1, refiner_motion_latents=0)
    return config.replace(
        lr_a2v=dit,
        refiner=dataclasses.replace(dit, patch=config.refiner.patch),
        text=TextConfig(dim=16, depth=1, heads=1, max_bytes=16),
        audio=AudioConfig(feature_dim=16, left_context_frames=2, lookahead_frames=2, encoder_width=16),
        segment=segment,
    )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_fresh_generators_sample_exactly_the_picture_they_start_from(preset: str) -> None:
    c = narrow(PRESETS[preset])
    torch.manual_seed(0)
    lr_model, refiner = LRA2V(c), PGRefiner(c)
    lr, hr = lr_batch(c, batch=1), refiner_batch(c, batch=1)
    with torch.no_grad():
        for steps in (1, 3):
            noise = torch.randn_like(lr.target)
            times = sampling_times(steps, c.flow.lr_time_shift)
            sample = euler_sample(lr_model.velocity(lr_conditions(lr), lr_model.guidance()), noise, times)
            torch.testing.assert_close(sample, lr.still.expand_as(sample), atol=1e-5, rtol=1e-5)

            noise = torch.randn_like(hr.target)
            times = sampling_times(steps, c.flow.refiner_time_shift)
            sample = euler_sample(refiner.velocity(refiner_conditions(hr)), noise, times)
            torch.testing.assert_close(sample, lr_on_hr_grid(hr.lr, c), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_target_equal_to_the_start_costs_no_loss_at_init(preset: str) -> None:
    """The skip is in the loss path, whatever the condition dropout drew."""
    c = narrow(PRESETS[preset])
    lr = lr_batch(c)
    still = dataclasses.replace(lr, target=lr.still.expand_as(lr.target).clone())
    assert lr_a2v_step(LRA2V(c), still).loss == 0
    assert lr_a2v_step(LRA2V(c), lr).loss > 0
    hr = refiner_batch(c)
    upscaled = dataclasses.replace(hr, target=lr_on_hr_grid(hr.lr, c))
    assert refiner_step(PGRefiner(c), upscaled).loss == 0
    assert refiner_step(PGRefiner(c), hr).loss > 0


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_lr_latents_land_on_the_hr_cells_that_show_the_same_place(preset: str) -> None:
    """Each HR cell samples the LR frame where `cover` put the same part of the picture. An LR
    'latent' holding each cell's own LR pixel position is resampled to the HR grid (bilinear: exact
    on such a ramp); at each HR cell the position read, looked up in a picture that `cover` framed
    from the HR pixel positions, must give back that HR cell's own centre."""
    c = PRESETS[preset]
    (h, w), (H, W) = c.lr_latent_grid, c.hr_latent_grid
    s = c.time.vae_spatial_stride
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) * s, (torch.arange(w) + 0.5) * s, indexing="ij")
    up = lr_on_hr_grid(torch.stack([xs, ys])[None, :, None], c)[0, :, 0]  # [2, H, W] LR pixels
    Y, X = torch.meshgrid(torch.arange(c.hr.height) + 0.5, torch.arange(c.hr.width) + 0.5, indexing="ij")
    framed = cover(torch.stack([X, Y])[None], c.lr.width, c.lr.height)[0]  # HR position per LR pixel
    lr_size = {0: c.lr.width, 1: c.lr.height}
    read = {0: up[0, H // 2], 1: up[1, :, W // 2]}
    profile = {0: framed[0, c.lr.height // 2], 1: framed[1, :, c.lr.width // 2]}
    own = {0: (torch.arange(W) + 0.5) * s, 1: (torch.arange(H) + 0.5) * s}
    for axis in (0, 1):
        # Between the outermost LR cell centres: beyond them the resampling repeats the border.
        inside = (read[axis] > s / 2 + 1e-3) & (read[axis] < lr_size[axis] - s / 2 - 1e-3)
        assert inside.float().mean() > 0.8
        centres = np.arange(lr_size[axis]) + 0.5
        back = np.interp(read[axis][inside].numpy(), centres, profile[axis].numpy())
        torch.testing.assert_close(torch.from_numpy(back).float(), own[axis][inside], atol=0.75, rtol=0)
