"""`ihuman train lr-a2v|refiner --latent-cache N`: windows encoded once, stored, reused only when valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_bundle
from engine.models.pose import PoseHead
from engine.models.vae import VideoAutoencoder
from engine.training.latent_windows import cached_batches, encode_windows
from engine.training.registry import build_task
from engine.training.windows import batches
from ihuman.cli import main
from tests.engine.training.conftest import MICRO, window_seconds
from tests.factories import randomize_


def test_windows_are_encoded_once_and_stored_for_these_parts(bundle: Path) -> None:
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    stream = batches(task, 2, seed=0, seconds=window_seconds(task), workers=0)
    window = next(stream)
    windows = encode_windows(task, iter([window, next(stream)]), 3, bundle, seed=0)
    assert {k: v.shape[0] for k, v in windows.items()} == dict.fromkeys(
        ("latents", "still", "audio", "weight"), 3
    )
    # A stored window is what the step would have made from the frames themselves.
    task.model.eval()  # no motion-latent noise
    stored = task.assemble({k: v[:2] for k, v in windows.items()}, start_of_stream=False)
    fresh = task.make_batch(window, start_of_stream=False)
    for name in ("prefix", "motion", "target", "audio", "still", "weight"):
        torch.testing.assert_close(getattr(stored, name), getattr(fresh, name))

    nothing: list[dict] = []  # reading the stream again would raise StopIteration
    again = encode_windows(task, iter(nothing), 2, bundle, seed=0)  # fewer than stored: reused
    assert all(torch.equal(again[k], windows[k][:2]) for k in windows)
    for count, seed in ((4, 0), (3, 1)):  # more windows, or other ones: encoded anew
        with pytest.raises(StopIteration):
            encode_windows(task, iter(nothing), count, bundle, seed=seed)
    other = randomize_(VideoAutoencoder(MICRO), std=0.05, seed=9)
    save_bundle(bundle, MICRO, {"vae": other}, merge=True)  # another autoencoder: encoded anew
    with pytest.raises(StopIteration):
        encode_windows(task, iter(nothing), 3, bundle, seed=0)


def test_stored_windows_come_once_per_epoch_and_train(bundle: Path) -> None:
    task = build_task("lr-a2v", MICRO, bundle=bundle)
    stream = batches(task, 2, seed=0, seconds=window_seconds(task), workers=0)
    windows = encode_windows(task, stream, 4, bundle, seed=0)
    drawn = cached_batches(windows, 2, seed=0)
    epoch = torch.cat([next(drawn)["latents"] for _ in range(2)])
    firsts = sorted(float(x) for x in epoch.flatten(1)[:, 0])
    assert firsts == sorted(float(x) for x in windows["latents"].flatten(1)[:, 0])
    loss, stats = task.latent_loss(next(drawn))
    loss.backward()
    assert torch.isfinite(loss) and stats["flow"] == pytest.approx(float(loss.detach()))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    with pytest.raises(ValueError, match="stored windows"):
        next(cached_batches(windows, 5, seed=0))


def test_refiner_windows_are_stored_as_its_step_makes_them(bundle: Path) -> None:
    task = build_task("refiner", MICRO, bundle=bundle)
    stream = batches(task, 2, seed=0, seconds=window_seconds(task), workers=0)
    window = next(stream)
    windows = encode_windows(task, iter([window, next(stream)]), 3, bundle, seed=0)
    assert (bundle / "refiner_windows.safetensors").is_file()
    assert {k: v.shape[0] for k, v in windows.items()} == dict.fromkeys(("hr", "lr", "pose"), 3)
    assert windows["pose"].dtype == torch.uint8 and int(windows["pose"].max()) > 0  # strokes drawn
    # A stored window is the batch the step makes from the frames, its pose within a byte's step.
    stored = task.assemble({k: v[:2] for k, v in windows.items()})
    fresh = task.make_batch(window, predicted_pose=False)
    for name in ("prefix", "motion", "target", "lr"):
        torch.testing.assert_close(getattr(stored, name), getattr(fresh, name))
    truth, drawn = stored.pose, fresh.pose
    head = task.make_batch(window, predicted_pose=True).pose
    assert truth.shape == drawn.shape and truth.dtype == torch.float32
    # Each stored window holds the truth's raster or the pose head's, within a byte's step.
    for i in range(2):
        closest = min(float((truth[i] - p[i]).abs().max()) for p in (drawn, head))
        assert closest <= 0.5 / 255 + 1e-6
    torch.testing.assert_close(drawn, window["pose"], atol=0.5 / 255 + 1e-6, rtol=0)

    loss, _ = task.latent_loss(next(cached_batches(windows, 2, seed=0)))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())
    # The pose head is what the refiner's store reads besides the autoencoder: another one, anew.
    nothing: list[dict] = []
    assert encode_windows(task, iter(nothing), 3, bundle, seed=0)["hr"].shape[0] == 3
    other = randomize_(PoseHead(MICRO), std=0.05, seed=9)
    save_bundle(bundle, MICRO, {"pose": other}, merge=True)
    with pytest.raises(StopIteration):
        encode_windows(task, iter(nothing), 3, bundle, seed=0)


def test_latent_cache_is_for_the_generators_only(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "vae", "--out", str(bundle), "--steps", "1", "--latent-cache", "4"])
    assert code == 2
    assert "--latent-cache is for the lr-a2v and refiner tasks, not vae" in capsys.readouterr().err
