"""`ihuman train` on any device: bf16 autocast, batches moved to the model, seeded draws that do not
depend on the device, and a wall-time limit that ends a run with a checkpoint."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_bundle
from engine.config import Resolution
from engine.parts import Parts
from engine.randomness import rand, randn
from engine.training.registry import GENERATOR_TASKS, PART_TASKS, build_task
from engine.training.steps import lr_a2v_step
from engine.training.task import Task
from engine.training.trainer import Trainer, TrainSettings, to_device
from engine.training.windows import batches
from ihuman.cli import main
from tests.factories import micro_config, randomize_

pytestmark = pytest.mark.slow  # make test-fast leaves it out

# The micro preset at the fixture clips' 5:3 frame (160x96), so tasks can read them.
MICRO = micro_config().replace(lr=Resolution(80, 48), hr=Resolution(160, 96))
FIXTURES = Path(__file__).parents[2] / "fixtures" / "procedural"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """Every part a task may read (random, as if trained)."""
    parts = Parts.random(MICRO, seed=2)
    hand = build_task("hand-evaluator", MICRO).model
    modules = {n: getattr(parts, n) for n in ("vae", "audio", "pose", "lr_a2v", "refiner")}
    for module in (*modules.values(), hand):
        randomize_(module, std=0.05)
    save_bundle(tmp_path, MICRO, {**modules, "hand": hand})
    return tmp_path


def _seconds(task: object) -> float:
    return task.spec.frames / 25 + 0.2  # type: ignore[attr-defined]


def _task(name: str, bundle: Path) -> Task:
    if name in PART_TASKS:
        return build_task(name, MICRO)
    return build_task(name, MICRO, bundle=bundle)


def test_seeded_draws_run_on_the_generators_device_then_move() -> None:
    """torch refuses a CPU generator for a CUDA draw; the helpers draw on the CPU and move the
    numbers (that they are the same numbers on a GPU: the `gpu` task tests below)."""
    expected = torch.rand(3, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(rand((3, 4), generator=torch.Generator().manual_seed(5)), expected)
    on_meta = randn((3, 4), generator=torch.Generator().manual_seed(5), device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (3, 4)
    assert rand((2,), device="cpu").shape == (2,)  # without a generator: drawn where it goes


def test_to_device_moves_tensors_and_keeps_other_values() -> None:
    batch = {"frames": torch.zeros(2, 3), "name": "x"}
    moved = to_device(batch, torch.device("meta"))
    assert moved["frames"].device.type == "meta" and moved["name"] == "x"


def test_lr_a2v_trains_in_bf16_autocast_with_float32_weights(bundle: Path) -> None:
    """The same step in bf16 autocast: a loss close to float32's, float32 gradients and weights."""
    task = _task("lr-a2v", bundle)
    randomize_(task.model, std=0.05)  # a fresh model's adaLN-zero output is 0 in any precision
    window = next(batches(task, 2, seed=0, seconds=_seconds(task), workers=0))
    data = task.make_batch(window, start_of_stream=False)
    fixed = {"noise": torch.randn(data.target.shape), "t": torch.full((2,), 0.5)}
    full = lr_a2v_step(task.model, data, generator=torch.Generator().manual_seed(1), **fixed).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = lr_a2v_step(task.model, data, generator=torch.Generator().manual_seed(1), **fixed).loss
    value, reference = float(half.detach()), float(full.detach())
    assert half.dtype == torch.float32 and math.isfinite(value)
    assert value == pytest.approx(reference, rel=0.05) and value != reference
    half.backward()
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    trainer = Trainer(
        task.name, task.part, task.model, MICRO, bundle, TrainSettings(steps=2, log_every=1, bf16=True)
    )
    assert trainer.run(batches(task, 2, seed=0, seconds=_seconds(task), workers=0), task.loss)
    assert all(p.dtype == torch.float32 for p in task.model.parameters())
    rows = (bundle / "train_lr-a2v.jsonl").read_text().splitlines()
    assert len(rows) == 2 and all(math.isfinite(json.loads(r)["loss"]) for r in rows)


def test_time_limit_stops_with_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    task = build_task("pose", MICRO, 64, 32)
    settings = TrainSettings(steps=50, checkpoint_every=100, time_limit_s=0.0)
    trainer = Trainer(task.name, task.part, task.model, MICRO, tmp_path, settings)
    stream = batches(task, 2, seed=0, seconds=0.4, workers=0)
    assert trainer.run(stream, task.loss) is False and trainer.step == 0
    assert json.loads((tmp_path / "train_pose.json").read_text())["step"] == 0  # checkpointed
    fresh = build_task("pose", MICRO, 64, 32)
    resumed = Trainer(fresh.name, fresh.part, fresh.model, MICRO, tmp_path, TrainSettings(steps=2))
    assert resumed.resume()  # the checkpointed weights, in a new model
    assert all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in task.model.state_dict().items())
    assert resumed.run(stream, fresh.loss) and resumed.step == 2


def test_cli_trains_in_bf16_on_the_cpu_and_reports_the_time_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "pose", "--out", str(tmp_path), "--batch", "2", "--res", "64x32", "--seconds", "0.4"]
    assert main([*args, "--steps", "2", "--eval-clips", "1", "--precision", "bf16", "--device", "cpu"]) == 0
    assert "training pose on cpu in bfloat16 autocast" in capsys.readouterr().out
    assert main([*args, "--steps", "9", "--eval-clips", "1", "--time-limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "--time-limit reached at step 2" in out and "in float32" in out  # auto: fp32 on the CPU
    assert main([*args, "--steps", "3", "--eval-clips", "0"]) == 0  # a machine without espeak-ng
    assert "no held-out evaluation" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--time-limit", "-1"])
    assert "minutes >= 0" in capsys.readouterr().err


def _crop_pairs(crop: int) -> Iterator[dict]:
    while True:
        yield {"good": torch.rand(2, 3, crop, crop), "bad": torch.rand(2, 3, crop, crop)}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("name", [*PART_TASKS, *GENERATOR_TASKS])
def test_every_task_trains_in_bf16_on_the_device(name: str, device: str, bundle: Path) -> None:
    """Each task's step on the device in bf16 autocast, and its evaluation there in float32, which
    agrees with the CPU's: the seeded draws are the same numbers on both. The windows come from the
    stored fixture clips (a GPU machine may have no espeak-ng to make speech on the fly); the hand
    evaluator's pairs are rendered with speech, so it gets random crops of the right size."""
    task = _task(name, bundle).to(torch.device(device))
    if name == "hand-evaluator":
        windows = _crop_pairs(task.model.crop)  # type: ignore[attr-defined]
    else:
        windows = batches(task, 2, seed=0, seconds=_seconds(task), workers=0, data=FIXTURES)
    settings = TrainSettings(steps=2, log_every=1, bf16=True)
    trainer = Trainer(task.name, task.part, task.model, MICRO, bundle, settings, task.extra)
    assert trainer.run(windows, task.loss)
    assert all(p.device.type == device and p.dtype == torch.float32 for p in task.model.parameters())
    evaluation = [next(windows)]
    torch.manual_seed(0)  # the tasks' own unseeded choices (stream start, pose source) match too
    on_device = task.evaluate([to_device(b, torch.device(device)) for b in evaluation])
    torch.manual_seed(0)
    on_cpu = task.to(torch.device("cpu")).evaluate(evaluation)
    for key, value in on_cpu.items():
        if key == "speedup":  # a timing, not a result
            continue
        assert math.isfinite(on_device[key])
        assert on_device[key] == pytest.approx(value, rel=0.02, abs=1e-3), key
