import pytest
import torch

from engine.config import DropoutConfig
from engine.flow import (
    Guidance,
    euler_sample,
    flow_matching_loss,
    guided,
    noise_frames,
    sample_training_time,
    sampling_times,
    time_shift,
    velocity_from_estimate,
    with_sampler_times,
)
from engine.models.lr_a2v import CONDITIONS, LRA2V
from engine.models.refiner import PGRefiner
from engine.presets import get_preset
from engine.training.steps import lr_a2v_step, refiner_step
from tests.factories import lr_batch, lr_conditions, randomize_, refiner_batch


def test_path_end_points_and_velocity() -> None:
    z1, eps = torch.randn(2, 3, 4, 5, 6), torch.randn(2, 3, 4, 5, 6)
    t = torch.tensor([[0.0, 0.25, 0.5, 0.75]]).expand(2, -1)
    z_t = noise_frames(z1, eps, t)
    assert torch.equal(z_t[:, :, 0], eps[:, :, 0])
    torch.testing.assert_close(z_t[:, :, 2], 0.5 * eps[:, :, 2] + 0.5 * z1[:, :, 2])
    # d z_t / d t = z1 - eps, which is the velocity that leads from z_t to the true z1
    dt = 1e-3
    z_dt = noise_frames(z1, eps, t + dt)
    torch.testing.assert_close((z_dt - z_t) / dt, z1 - eps, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(velocity_from_estimate(z1, z_t, t), z1 - eps, atol=1e-5, rtol=1e-5)


def test_velocity_from_an_estimate_lands_on_it_in_one_step() -> None:
    estimate, z = torch.randn(3, 2, 2, 4, 4), torch.randn(3, 2, 2, 4, 4)
    for t0 in (0.0, 0.3, 0.9):
        t = torch.full((3,), t0)
        torch.testing.assert_close(z + (1 - t0) * velocity_from_estimate(estimate, z, t), estimate)
    # Near t = 1 the division is clamped: finite, and zero for a frame already at its estimate.
    ones = torch.ones(3, 2)
    assert torch.isfinite(velocity_from_estimate(estimate, z, ones)).all()
    assert torch.equal(velocity_from_estimate(z, z, ones), torch.zeros_like(z))


def test_prefix_is_bit_identical_after_noising() -> None:
    c = get_preset("tiny").replace(dropout=DropoutConfig(0, 0, 0, 0, 0))
    b = lr_batch(c)
    prefix = b.prefix * 1e-3 + 7.0  # values where 0 * eps + 1 * z1 could round
    b = type(b)(prefix=prefix, motion=b.motion, target=b.target, audio=b.audio, text=b.text, still=b.still)
    res = lr_a2v_step(LRA2V(c), b)
    P, M = b.prefix.shape[2], b.motion.shape[2]
    assert torch.equal(res.noised[:, :, :P], prefix)
    assert torch.equal(res.noised[:, :, P : P + M], b.motion)
    assert not torch.equal(res.noised[:, :, P + M :], b.target)


def test_refiner_prefix_is_bit_identical_after_noising() -> None:
    c = get_preset("tiny").replace(dropout=DropoutConfig(0, 0, 0, 0, 0))
    b = refiner_batch(c, motion=1)
    res = refiner_step(PGRefiner(c), b)
    assert torch.equal(res.noised[:, :, :2], torch.cat([b.prefix, b.motion], dim=2))


def test_loss_ignores_weight_zero_frames() -> None:
    pred, target = torch.randn(2, 4, 5, 3, 3), torch.randn(2, 4, 5, 3, 3)
    w = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])  # prefix, 2 motion, 2 new
    base = flow_matching_loss(pred, target, w)
    altered = target.clone()
    altered[:, :, :3] = torch.randn_like(altered[:, :, :3]) * 100
    assert torch.equal(flow_matching_loss(pred, altered, w), base)
    altered[:, :, :3] = float("nan")
    assert torch.equal(flow_matching_loss(pred, altered, w), base)
    changed = target.clone()
    changed[:, :, 4] += 1.0
    assert flow_matching_loss(pred, changed, w) > base
    torch.testing.assert_close(base, (pred - target)[:, :, 3:].pow(2).mean())


def test_spatial_weight_favours_its_cells() -> None:
    pred, target = torch.zeros(1, 2, 2, 3, 3), torch.zeros(1, 2, 2, 3, 3)
    w = torch.tensor([0.0, 1.0])
    uniform = torch.full((1, 1, 1, 3, 3), 5.0)
    target[:, :, 1, 0, 0] = 1.0  # an error in one corner cell of the new frame
    torch.testing.assert_close(
        flow_matching_loss(pred, target, w, uniform), flow_matching_loss(pred, target, w)
    )
    heavy = torch.ones(1, 1, 1, 3, 3)
    heavy[..., 0, 0] = 10.0
    light = torch.ones(1, 1, 1, 3, 3)
    light[..., 2, 2] = 10.0
    assert flow_matching_loss(pred, target, w, heavy) > 5 * flow_matching_loss(pred, target, w, light)
    target[:, :, 0] = float("nan")  # a weight-0 frame still cannot leak in
    assert torch.isfinite(flow_matching_loss(pred, target, w, heavy))


def test_training_loss_ignores_prefix_and_motion_predictions() -> None:
    """Through the real step: the context frames' predictions carry no gradient to the loss."""
    c = get_preset("tiny").replace(dropout=DropoutConfig(0, 0, 0, 0, 0))
    model = randomize_(LRA2V(c))
    b = lr_batch(c)
    seen = {}

    def keep_grad(_: torch.nn.Module, __: object, out: torch.Tensor) -> None:
        out.retain_grad()
        seen["out"] = out

    handle = model.dit.final.register_forward_hook(keep_grad)
    lr_a2v_step(model, b).loss.backward()
    handle.remove()
    grad = seen["out"].grad  # [B, L, C*4] tokens of all frames
    tokens = c.lr_tokens_per_latent
    ctx = c.segment.prefix_latents + c.segment.motion_latents
    assert torch.count_nonzero(grad[:, : ctx * tokens]) == 0
    assert torch.count_nonzero(grad[:, ctx * tokens :]) > 0


def test_time_shift() -> None:
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(time_shift(t, 1.0), t)
    shifted = time_shift(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert torch.all(shifted[1:-1] < t[1:-1])  # more time spent near noise
    assert torch.all(shifted[1:] > shifted[:-1])


def test_sampling_times_and_training_time_range() -> None:
    times = sampling_times(4, shift=3.0)
    assert times.shape == (5,) and times[0] == 0 and times[-1] == 1
    t = sample_training_time(1000, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1 and t.mean() < 0.5
    with pytest.raises(ValueError, match="steps"):
        sampling_times(0)


def test_a_share_of_training_times_is_where_the_sampler_evaluates() -> None:
    g = torch.Generator().manual_seed(0)
    drawn = sample_training_time(2000, shift=3.0, generator=g)
    assert torch.equal(with_sampler_times(drawn, 1, 3.0, 0.0, g), drawn)
    assert torch.equal(with_sampler_times(drawn, 1, 3.0, 1.0, g), torch.zeros(2000))  # one step: t = 0
    mixed = with_sampler_times(drawn, 2, 3.0, 0.75, g)
    starts = sampling_times(2, 3.0)[:-1]
    at_sampler = (mixed[:, None] == starts).any(1)
    assert 0.7 < at_sampler.float().mean() < 0.8
    assert torch.equal(mixed[~at_sampler], drawn[~at_sampler])
    assert (mixed == starts[0]).any() and (mixed == starts[1]).any()


@pytest.mark.parametrize("steps", [1, 3])
def test_euler_is_exact_on_a_straight_path(steps: int) -> None:
    z1, eps = torch.randn(2, 3), torch.randn(2, 3)
    out = euler_sample(lambda z, t: z1 - eps, eps, sampling_times(steps, 3.0))
    torch.testing.assert_close(out, z1)


# ----- guidance --------------------------------------------------------------------------------


def _predictions_by_drop() -> dict[frozenset[str], torch.Tensor]:
    names = ("a", "b", "c")
    return {frozenset(names[i:]): torch.randn(4) for i in range(4)}


def test_guidance_plan_weights() -> None:
    g = Guidance(("a", "b", "c"), (2.0, 1.5, 1.5))
    # weights 1 - s1, s1 - s2, s2 - s3, s3; the zero weight (dropping only "c") is not evaluated
    assert g.plan() == [(frozenset("abc"), -1.0), (frozenset("bc"), 0.5), (frozenset(), 1.5)]


@pytest.mark.parametrize("scales", [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (2.0, 4.5, 1.5), (1.0, 3.0, 1.0)])
def test_guidance_matches_the_nested_formula(scales: tuple[float, float, float]) -> None:
    preds = _predictions_by_drop()
    v = [preds[frozenset("abc"[i:])] for i in range(4)]
    expected = v[0] + sum(s * (v[i + 1] - v[i]) for i, s in enumerate(scales))
    calls = []

    def predict(drops: list[frozenset[str]]) -> list[torch.Tensor]:
        calls.append(len(drops))
        return [preds[d] for d in drops]

    out = guided(predict, Guidance(("a", "b", "c"), scales))
    torch.testing.assert_close(out, expected)
    assert calls == [len(Guidance(("a", "b", "c"), scales).plan())]


def test_cfg_scale_one_is_conditional_and_zero_is_unconditional_on_the_model() -> None:
    c = get_preset("tiny")
    model = randomize_(LRA2V(c))
    b = lr_batch(c)
    cond = lr_conditions(b)
    z, t = torch.randn_like(b.target), torch.full((2,), 0.4)
    with torch.no_grad():
        conditional = model(z, t, cond)
        unconditional = model(z, t, cond.drop_all(frozenset(CONDITIONS)))
        ones = model.velocity(cond, Guidance(CONDITIONS, (1.0, 1.0, 1.0)))(z, t)
        zeros = model.velocity(cond, Guidance(CONDITIONS, (0.0, 0.0, 0.0)))(z, t)
        strong = model.velocity(cond, Guidance(CONDITIONS, (1.0, 3.0, 1.0)))(z, t)
        no_audio = model(z, t, cond.drop_all(frozenset({"audio", "text"})))
        no_text = model(z, t, cond.drop_all(frozenset({"text"})))

    def v(estimate: torch.Tensor) -> torch.Tensor:
        return velocity_from_estimate(estimate, z, t)

    torch.testing.assert_close(ones, v(conditional))
    torch.testing.assert_close(zeros, v(unconditional))
    assert not torch.allclose(conditional, unconditional)
    # scales (1, 3, 1): x = x_ref + 3 (x_ref_audio - x_ref) + (x_all - x_ref_audio), as a velocity
    torch.testing.assert_close(strong, v(no_audio + 3 * (no_text - no_audio) + (conditional - no_text)))
