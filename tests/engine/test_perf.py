"""Segment costs counted on the meta device: they follow the models, the steps and the guidance."""

from __future__ import annotations

import dataclasses

import pytest

from engine.perf import segment_costs, segment_floor_ms
from engine.presets import get_preset


def _by_name(costs: list) -> dict:
    return {c.name: c for c in costs}


@pytest.mark.slow
def test_a_paper_forward_costs_what_its_weights_and_tokens_say() -> None:
    """A transformer forward is at least 2 FLOPs per weight per token (the matmuls); attention and
    the embeddings add to it, but not more than as much again at these lengths."""
    config = get_preset("paper")
    costs = _by_name(segment_costs(config, lr_steps=1))
    for name, tokens in (("LR-A2V", config.lr_segment_tokens), ("PG-Refiner", config.hr_segment_tokens)):
        cost = costs[name]
        weights = cost.weight_bytes / 2  # bf16
        assert 2 * weights * tokens <= cost.flop <= 2 * 2 * weights * tokens, (name, cost.flop)
    assert costs["PG-Refiner"].calls == config.flow.refiner_steps == 1


def test_costs_scale_with_steps_and_guidance_branches() -> None:
    tiny = get_preset("tiny")
    unguided = dataclasses.replace(tiny.flow, guidance_reference=1.0, guidance_audio=1.0, guidance_text=1.0)
    config = tiny.replace(flow=unguided)
    one, four = _by_name(segment_costs(config, lr_steps=1)), _by_name(segment_costs(config, lr_steps=4))
    # From two steps on, the clean context's keys/values are computed once (LRA2V.velocity):
    # tiny's segment is 2 context + 2 new latent frames, so four steps process the tokens of
    # 2 + 4 x 2 = 10 frames instead of 4 x 4 = 16 (attention over all of them stays per step).
    assert 10 / 16 < four["LR-A2V"].flop / (4 * one["LR-A2V"].flop) < 0.7
    assert (one["LR-A2V"].calls, four["LR-A2V"].calls) == (1, 5)
    assert four["PG-Refiner"].flop == one["PG-Refiner"].flop  # the refiner's work does not change
    # Audio and text guidance 2 (the tiny preset's): v = 2 v(all) - v(no audio, no text), two
    # estimates in one batched forward; audio 2 with text 1 needs a third, v(no text).
    guided = config.replace(flow=dataclasses.replace(unguided, guidance_audio=2.0, guidance_text=2.0))
    three = config.replace(flow=dataclasses.replace(unguided, guidance_audio=2.0))
    assert _by_name(segment_costs(three, lr_steps=1))["LR-A2V"].flop == pytest.approx(3 * one["LR-A2V"].flop)
    assert _by_name(segment_costs(guided, lr_steps=1))["LR-A2V"].flop == pytest.approx(2 * one["LR-A2V"].flop)


def test_the_floor_is_the_flops_over_the_throughput() -> None:
    costs = segment_costs(get_preset("tiny"))
    total = sum(c.flop for c in costs)
    assert segment_floor_ms(costs, 1.0) == pytest.approx(total / 1e12 * 1000)
    low, refine = segment_floor_ms(costs, 1.0, "low_res"), segment_floor_ms(costs, 1.0, "refine")
    assert low + refine == pytest.approx(segment_floor_ms(costs, 1.0)) and low > 0 and refine > 0
