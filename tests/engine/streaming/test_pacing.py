"""pacing.py: the delay D, the due times of the Timeline, the compute average, the degrade policy."""

from __future__ import annotations

import dataclasses

import pytest

from engine.streaming.pacing import (
    DegradePolicy,
    MovingAverage,
    Timeline,
    quality_levels,
    session_delay,
    target_delay,
)
from tests.factories import micro_config


def test_degrade_policy_steps_down_recovers_and_backs_off() -> None:
    assert [(q.lr_steps, q.refine) for q in quality_levels(4)] == [
        (4, True),
        (2, True),
        (1, True),
        (1, False),
    ]
    assert [(q.lr_steps, q.refine) for q in quality_levels(1)] == [(1, True), (1, False)]
    assert [q.level for q in quality_levels(1)] == [0, 1]
    policy = DegradePolicy(4, clean_to_recover=3)
    assert policy.end_of_segment(True) is None  # one miss is not a pattern
    assert policy.end_of_segment(True).level == 1
    for _ in range(2):
        policy.end_of_segment(True)
    assert policy.level == 2
    assert [policy.end_of_segment(False) for _ in range(3)][-1].level == 1  # recovers after 3 clean
    policy.end_of_segment(True)
    assert policy.end_of_segment(True).level == 2  # the recovery failed: next one waits longer
    assert all(policy.end_of_segment(False) is None for _ in range(5))
    assert policy.end_of_segment(False).level == 1
    assert policy.changes == 5
    off = DegradePolicy(4, enabled=False)
    assert all(off.end_of_segment(True) is None for _ in range(10)) and off.level == 0


def test_target_delay_covers_the_audio_wait_and_the_compute() -> None:
    cfg = micro_config()
    wait = (cfg.segment_video_frames + cfg.audio.lookahead_frames) / cfg.time.fps
    assert target_delay(cfg, compute_s=0.2, jitter_s=0.05, safety=1.5) == pytest.approx(wait + 0.35)
    # A generator that hears ahead waits for that audio too: 40 ms a frame of lead.
    ahead = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, audio_lead_frames=2))
    assert target_delay(ahead, 0.2, 0.05, 1.5) == pytest.approx(wait + 0.35 + 2 / cfg.time.fps)


def test_session_delay_is_the_one_asked_for_else_the_automatic_one() -> None:
    cfg = micro_config()
    assert session_delay(cfg, 0.2, 900.0, 60.0, 1.5) == pytest.approx(0.9)
    assert session_delay(cfg, 0.2, None, 50.0, 1.5) == pytest.approx(target_delay(cfg, 0.2, 0.05, 1.5))


def test_the_timeline_puts_audio_and_video_on_one_schedule() -> None:
    line = Timeline(t0=10.0, delay=0.5, fps=25, rate=16_000)
    assert line.frame_due(25) == pytest.approx(11.5) == line.sample_due(16_000)
    assert line.arriving_pts(9.0) == 0 and line.arriving_pts(11.0) == 16_000
    assert line.playing_pts(10.25) < 0 and line.playing_pts(11.5) == 16_000


def test_the_moving_average_starts_at_its_estimate_and_follows_measurements() -> None:
    average = MovingAverage(1.0)
    average.add(2.0)
    assert average.value == pytest.approx(1.2)
    for _ in range(50):
        average.add(0.5)
    assert average.value == pytest.approx(0.5, abs=1e-4)
