"""Every preset's shapes, computed on the meta device (no paper-size weights are allocated)."""

import dataclasses

import pytest
import torch

from engine.exceptions import InputShapeError
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.presets import PRESETS, get_preset
from tests.factories import lr_batch, lr_conditions, refiner_batch, refiner_conditions, to_device


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_forward_shapes_on_meta_device(name: str) -> None:
    c = get_preset(name)
    lb, rb = to_device(lr_batch(c, batch=1), "meta"), to_device(refiner_batch(c, batch=1), "meta")
    t = torch.rand(1, device="meta")
    with torch.device("meta"):
        lr_model, refiner = LRA2V(c), PGRefiner(c)
        v_lr = lr_model(lb.target, t, lr_conditions(lb))
        v_all = lr_model(lb.target, t, lr_conditions(lb), all_frames=True)
        v_hr = refiner(rb.target, t, refiner_conditions(rb))
    assert v_lr.device.type == "meta"
    assert v_lr.shape == lb.target.shape
    assert v_all.shape[2] == c.lr_segment_latents
    assert v_hr.shape == rb.target.shape == (1, c.latent_channels, c.segment.new_latents, *c.hr_latent_grid)


def test_paper_generators_are_about_1_3b_parameters() -> None:
    c = get_preset("paper")
    with torch.device("meta"):
        counts = [_count(LRA2V(c)), _count(PGRefiner(c))]
    for n in counts:
        assert 1.1e9 <= n <= 1.6e9, counts
    assert counts[0] > counts[1]  # the audio branch is LR-A2V's extra


def test_real_forward_runs() -> None:
    """The tiny preset's generators compute for real (larger presets' shapes are checked on the
    meta device above: a real forward of `small` cost 18 s of the suite and checked nothing more)."""
    c = get_preset("tiny")
    lr_model, refiner = LRA2V(c), PGRefiner(c)
    lb, rb = lr_batch(c, batch=1), refiner_batch(c, batch=1)
    with torch.no_grad():
        v_lr = lr_model(lb.target, torch.rand(1), lr_conditions(lb))
        v_hr = refiner(rb.target, torch.rand(1), refiner_conditions(rb))
    assert v_lr.shape == lb.target.shape and torch.isfinite(v_lr).all()
    assert v_hr.shape == rb.target.shape and torch.isfinite(v_hr).all()


def test_motion_frames_are_optional() -> None:
    c = get_preset("tiny")
    b = lr_batch(c, batch=1, motion=0)
    assert LRA2V(c)(b.target, torch.rand(1), lr_conditions(b)).shape == b.target.shape


def test_bad_audio_window_shape_is_named() -> None:
    c = get_preset("tiny")
    b = lr_batch(c, batch=1)
    cond = lr_conditions(b)
    bad = dataclasses.replace(cond, audio=cond.audio[:, :-1])
    with pytest.raises(InputShapeError, match="audio windows"):
        LRA2V(c)(b.target, torch.rand(1), bad)


def test_bad_pose_shape_is_named() -> None:
    c = get_preset("tiny")
    b = refiner_batch(c, batch=1)
    cond = refiner_conditions(b)
    bad = dataclasses.replace(cond, pose=cond.pose[:, :7])
    with pytest.raises(InputShapeError, match="pose tensor: expected \\[1, 8"):
        PGRefiner(c)(b.target, torch.rand(1), bad)
