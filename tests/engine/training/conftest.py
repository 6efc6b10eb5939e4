"""What the generator tasks' tests share: a bundle of frozen parts to train on."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.checkpoint import save_bundle
from engine.parts import Parts
from engine.training.task import Task
from tests.factories import micro_config, randomize_

MICRO = micro_config()


def window_seconds(task: Task) -> float:
    """Seconds of an on-the-fly clip that hold one of the task's windows."""
    return task.spec.frames / 25 + 0.2


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle holding the frozen parts the generator tasks read (random, as if trained)."""
    parts = Parts.random(MICRO, seed=2)
    for module in (parts.vae, parts.audio, parts.pose):
        randomize_(module, std=0.05)
    save_bundle(tmp_path, MICRO, {"vae": parts.vae, "audio": parts.audio, "pose": parts.pose})
    return tmp_path
