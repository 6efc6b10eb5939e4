"""The engine's warm-up meets every shape a session will before the segment it measures: a shape
met first costs a compile or an attention tuning run, which is not a segment's compute."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from torch import Tensor

from engine.generation.segments import Segment
from engine.generation.stages import DecodedLowRes, LowResStage, RefineStage
from engine.parts import Parts
from engine.streaming.engine import Engine
from tests.factories import micro_config


def test_the_warm_up_meets_every_shape_before_the_segment_it_measures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    micro = micro_config()
    config = micro.replace(
        segment=dataclasses.replace(micro.segment, refiner_motion_latents=3),  # grows over 2 segments
        flow=dataclasses.replace(micro.flow, lr_steps=3),  # a cached path, and one step when degraded
    )
    calls: list[tuple[str, int | None]] = []
    low_run, refine_run = LowResStage.run, RefineStage.run

    def low(self: LowResStage, seg: Segment, audio: Tensor, steps: int | None = None) -> DecodedLowRes:
        calls.append(("low-res steps", steps or self.steps))
        return low_run(self, seg, audio, steps)

    def refine(self: RefineStage, decoded: DecodedLowRes) -> Tensor:
        calls.append(("refiner motion", self.motion.shape[2]))
        return refine_run(self, decoded)

    monkeypatch.setattr(LowResStage, "run", low)
    monkeypatch.setattr(RefineStage, "run", refine)
    asyncio.run(Engine(Parts.random(config)).estimate())

    measured, before = calls[-2:], calls[:-2]
    assert measured == [("low-res steps", 3), ("refiner motion", 3)]  # a session's steady shapes
    assert all(call in before for call in measured)  # ... met before the measured segment
    assert ("low-res steps", 1) in before  # the degraded path's shape too
