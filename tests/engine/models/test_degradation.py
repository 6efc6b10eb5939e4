import torch

from engine.models.degradation import degrade_latent, gaussian_blur, inference_degradation, sample_degradation
from engine.presets import get_preset


def test_zero_sigma_is_identity_and_blur_is_per_sample() -> None:
    z = torch.randn(2, 3, 2, 12, 20)
    out = gaussian_blur(z, torch.tensor([0.0, 1.5]))
    torch.testing.assert_close(out[0], z[0])
    assert not torch.allclose(out[1], z[1])


def test_blur_is_a_low_pass() -> None:
    z = torch.randn(1, 4, 1, 32, 32)
    out = gaussian_blur(z, torch.tensor([1.0]))
    torch.testing.assert_close(out.mean(), z.mean(), atol=0.02, rtol=0)  # DC kept
    assert out.std() < 0.5 * z.std()  # white noise loses most of its energy
    constant = torch.full((1, 1, 1, 16, 16), 3.0)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([1.0])), constant)


def test_degradation_noise_level() -> None:
    z = torch.zeros(3, 4, 2, 16, 16)
    out = degrade_latent(z, torch.zeros(3), torch.tensor([0.0, 0.1, 0.3]))
    assert out[0].abs().max() == 0
    assert abs(float(out[1].std()) - 0.1) < 0.01
    assert abs(float(out[2].std()) - 0.3) < 0.03


def test_training_and_inference_parameters() -> None:
    cfg = get_preset("tiny").degradation
    sigma, noise = sample_degradation(1000, cfg, torch.Generator().manual_seed(0))
    assert sigma.min() >= 0 and sigma.max() <= cfg.blur_sigma_max
    assert noise.min() >= 0 and noise.max() <= cfg.noise_max
    sigma, noise = inference_degradation(2, cfg)
    assert sigma.tolist() == [cfg.inference_blur_sigma] * 2
