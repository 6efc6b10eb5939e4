"""Flow matching: the probability path and loss, time schedules, the Euler sampler and guidance.

No model code lives here: a sampler sees only a velocity function `v(z, t)`.
"""

from engine.flow.guidance import Guidance, guided
from engine.flow.path import (
    MIN_REMAINING_TIME,
    flow_matching_loss,
    noise_frames,
    sample_training_time,
    velocity_from_estimate,
)
from engine.flow.sampler import VelocityFn, euler_sample
from engine.flow.schedule import sampling_times, time_shift, with_sampler_times

__all__ = [
    "MIN_REMAINING_TIME",
    "Guidance",
    "VelocityFn",
    "euler_sample",
    "flow_matching_loss",
    "guided",
    "noise_frames",
    "sample_training_time",
    "sampling_times",
    "time_shift",
    "velocity_from_estimate",
    "with_sampler_times",
]
