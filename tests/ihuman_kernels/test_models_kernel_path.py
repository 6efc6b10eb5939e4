"""The generators give the same outputs on the kernel path (interpreter) and the reference path."""

from __future__ import annotations

import logging

import pytest
import torch

from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from ihuman_kernels import dispatch
from tests.factories import (
    lr_batch,
    lr_conditions,
    micro_config,
    randomize_,
    refiner_batch,
    refiner_conditions,
)

MICRO = micro_config()


@torch.no_grad()
@pytest.mark.parametrize("model_cls", [LRA2V, PGRefiner])
def test_models_agree_on_both_paths(model_cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    model = randomize_(model_cls(MICRO), std=0.1).eval()
    if model_cls is LRA2V:
        batch = lr_batch(MICRO, batch=2)
        cond = lr_conditions(batch)
    else:
        batch = refiner_batch(MICRO, batch=2, motion=1)
        cond = refiner_conditions(batch)
    t = torch.tensor([0.3, 0.8])
    outputs = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("IHUMAN_KERNELS", backend)
        outputs[backend] = model(batch.target, t, cond)
    assert outputs["reference"].abs().max() > 0  # the model really computes something
    torch.testing.assert_close(outputs["triton"], outputs["reference"], atol=1e-4, rtol=1e-4)


def test_dispatch_picks_and_announces_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IHUMAN_KERNELS", raising=False)
    monkeypatch.setattr(dispatch, "_announced", set())
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="ihuman_kernels.dispatch"):
        assert dispatch.choose("attention", cpu) == "reference"  # auto: no CUDA here
        assert dispatch.choose("attention", cpu) == "reference"
        monkeypatch.setenv("IHUMAN_KERNELS", "triton")
        assert dispatch.choose("attention", cpu) == "triton"  # TRITON_INTERPRET=1 in the tests
        assert dispatch.choose("attention", cpu, backend="reference") == "reference"
    lines = [r.message for r in caplog.records]
    assert lines == [
        "kernels: attention runs the reference implementation (cpu)",
        "kernels: attention runs the triton implementation (interpreter)",
    ]
