"""Each condition changes the output and receives gradients (on weights 'as if trained')."""

import dataclasses

import pytest
import torch

from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.models.text import tokenize
from engine.presets import get_preset
from tests.factories import lr_batch, lr_conditions, randomize_, refiner_batch, refiner_conditions

TINY = get_preset("tiny")


def _grads_of(module: torch.nn.Module) -> list[float]:
    return [float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in module.parameters()]


def test_audio_changes_the_output_and_its_branch_gets_gradients() -> None:
    model = randomize_(LRA2V(TINY))
    b = lr_batch(TINY)
    cond = lr_conditions(b)
    t = torch.full((2,), 0.5)
    out = model(b.target, t, cond)
    other = model(b.target, t, dataclasses.replace(cond, audio=torch.randn_like(cond.audio)))
    assert (out - other).abs().max() > 1e-3
    out.square().mean().backward()
    for block in model.dit.blocks:
        assert all(g > 0 for g in _grads_of(block.audio_attn)), "every audio cross-attention weight learns"
    assert all(g > 0 for g in _grads_of(model.dit.audio_embed))


def test_audio_is_frame_local() -> None:
    """Changing only the audio window of the last new frame changes only frames that attend to it."""
    model = randomize_(LRA2V(TINY))
    b = lr_batch(TINY, batch=1)
    cond = lr_conditions(b)
    audio = cond.audio.clone()
    audio[:, -1] += 1.0
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        full = model(b.target, t, cond, all_frames=True)
        changed = model(b.target, t, dataclasses.replace(cond, audio=audio), all_frames=True)
    # Block-causal attention: the prefix and motion frames cannot see the last frame.
    ctx = TINY.segment.prefix_latents + TINY.segment.motion_latents
    torch.testing.assert_close(full[:, :, :ctx], changed[:, :, :ctx])
    assert (full[:, :, -1] - changed[:, :, -1]).abs().max() > 1e-3


def test_fresh_audio_branch_gets_a_gradient_at_its_output() -> None:
    """At init the branch outputs zero, yet its output projection learns (adaLN-zero style)."""
    model = LRA2V(TINY)
    model.dit.final.linear.weight.data.normal_(0, 0.05)  # let a loss reach the blocks
    b = lr_batch(TINY)
    model(b.target, torch.full((2,), 0.5), lr_conditions(b)).square().mean().backward()
    assert model.dit.blocks[-1].audio_attn.out.weight.grad.abs().sum() > 0


def test_text_changes_the_output_and_absent_text_is_empty_text() -> None:
    model = randomize_(LRA2V(TINY))
    b = lr_batch(TINY)
    cond = lr_conditions(b)
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        out = model(b.target, t, cond)
        other = model(
            b.target, t, dataclasses.replace(cond, text=tokenize(["waving hello", "sad"], TINY.text))
        )
        none = model(b.target, t, dataclasses.replace(cond, text=tokenize([None, None], TINY.text)))
        empty = model(b.target, t, dataclasses.replace(cond, text=tokenize(["", ""], TINY.text)))
        dropped = model(b.target, t, cond.drop_all(frozenset({"text"})))
    assert (out - other).abs().max() > 1e-3
    torch.testing.assert_close(none, empty)
    torch.testing.assert_close(dropped, empty)


@pytest.mark.parametrize("field", ["pose", "lr"])
def test_refiner_pose_and_lr_change_the_output_and_get_gradients(field: str) -> None:
    model = randomize_(PGRefiner(TINY))
    b = refiner_batch(TINY)
    cond = refiner_conditions(b)
    t = torch.full((2,), 0.5)
    out = model(b.target, t, cond)
    value = getattr(cond, field)
    other = model(b.target, t, dataclasses.replace(cond, **{field: torch.randn_like(value)}))
    assert (out - other).abs().max() > 1e-3
    out.square().mean().backward()
    proj = model.pose_proj if field == "pose" else model.lr_proj
    assert proj.weight.grad is not None
    assert proj.weight.grad.abs().sum() > 0


def test_dropped_refiner_conditions_contribute_nothing() -> None:
    model = randomize_(PGRefiner(TINY))
    cond = refiner_conditions(refiner_batch(TINY))

    def tokens(dropped: set[str]) -> torch.Tensor:
        c = cond.drop_all(frozenset(dropped))
        return model.condition_tokens(c.lr, c.pose)

    assert torch.equal(tokens({"pose", "lr"}), torch.zeros_like(tokens(set())))
    torch.testing.assert_close(tokens(set()), tokens({"lr"}) + tokens({"pose"}))


def test_reference_changes_the_output() -> None:
    model = randomize_(PGRefiner(TINY))
    b = refiner_batch(TINY)
    cond = refiner_conditions(b)
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        out = model(b.target, t, cond)
        other = model(b.target, t, dataclasses.replace(cond, prefix=torch.randn_like(cond.prefix)))
    assert (out - other).abs().max() > 1e-3
