import torch

from engine.config import DropoutConfig, FlowConfig
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.presets import get_preset
from engine.training.conditioning import lr_a2v_rates, refiner_rates, sample_keep
from engine.training.steps import lr_a2v_step, refiner_step
from tests.factories import lr_batch, micro_config, refiner_batch


def test_dropout_rates_come_from_config() -> None:
    cfg = DropoutConfig()
    assert lr_a2v_rates(cfg) == {"reference": 0.2, "audio": 0.1, "text": 0.1}
    assert refiner_rates(cfg) == {"reference": 0.2, "pose": 0.2, "lr": 0.2, "text": 0.1}
    keep = sample_keep(20_000, lr_a2v_rates(cfg), torch.Generator().manual_seed(0))
    for name, rate in lr_a2v_rates(cfg).items():
        assert abs(float((~keep[name]).float().mean()) - rate) < 0.01


def test_steps_are_reproducible_with_a_generator_and_train() -> None:
    c = get_preset("tiny")
    model = LRA2V(c)
    b = lr_batch(c)
    a = lr_a2v_step(model, b, generator=torch.Generator().manual_seed(3))
    again = lr_a2v_step(model, b, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.loss, again.loss) and torch.equal(a.t, again.t)
    a.loss.backward()
    assert model.dit.final.linear.weight.grad.abs().sum() > 0


def test_refiner_step_drops_conditions_per_sample() -> None:
    c = get_preset("tiny").replace(dropout=DropoutConfig(text=0, audio=0, reference=0, pose=1.0, lr=0.0))
    res = refiner_step(PGRefiner(c), refiner_batch(c), generator=torch.Generator().manual_seed(0))
    assert not res.keep["pose"].any() and res.keep["lr"].all()
    assert torch.isfinite(res.loss)


def test_refiner_trains_at_its_one_step_samplers_time_by_the_configured_share() -> None:
    """A one-step refiner is only ever asked at t = 0: that share of its training is drawn there."""
    base = micro_config()
    times = {}
    for share in (0.0, 0.75):
        c = base.replace(flow=FlowConfig(refiner_steps=1, refiner_sampler_time_share=share))
        g = torch.Generator().manual_seed(0)
        batch = refiner_batch(c)
        drawn = torch.cat([refiner_step(PGRefiner(c), batch, generator=g).t for _ in range(40)])
        times[share] = float((drawn == 0).float().mean())
    assert times[0.0] == 0.0
    assert 0.6 < times[0.75] < 0.9


def test_dropped_reference_reaches_the_model_as_zeros() -> None:
    c = get_preset("tiny").replace(dropout=DropoutConfig(text=0, audio=0, reference=1.0))
    res = lr_a2v_step(LRA2V(c), lr_batch(c))
    assert torch.equal(res.noised[:, :, :1], torch.zeros_like(res.noised[:, :, :1]))
