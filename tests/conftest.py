"""Test setup: CPU by default; Triton kernels (later issues) run in the interpreter on CPU."""

import os

# Must be set before any @triton.jit decorator runs. On a
# GPU machine run `TRITON_INTERPRET=0 pytest -m gpu`: the `gpu` tests then compile the kernels.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
