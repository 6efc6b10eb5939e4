"""Rendering speed of the procedural data: `python -m engine.data.bench [--out FILE.json]`.

Times, per resolution and torch thread count, rendering 4 s clips (100 frames)
of different characters (pose and motion precomputed; the speech is timed
separately), and reports frames/s with p50/p90/p99 of the per-clip times.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from engine.benchinfo import environment, percentiles, write_report
from engine.config import TimeBase
from engine.data.dataset import ProceduralWindows, WindowSpec
from engine.data.identity import sample_identity
from engine.data.motion import motion_from_audio
from engine.data.render import render
from engine.data.skeleton import pose_from_motion
from engine.data.speech import speech_take
from engine.presets import get_preset

RESOLUTIONS = ((640, 352), (1280, 720))


def run(clips: int, seconds: float) -> dict:
    time_base = TimeBase()
    speech_s, poses = [], []
    for seed in range(clips):
        start = time.perf_counter()
        audio = speech_take(seed, seconds, time_base.sample_rate)
        speech_s.append(time.perf_counter() - start)
        poses.append(
            (
                sample_identity(seed),
                pose_from_motion(sample_identity(seed), motion_from_audio(audio, seed, time_base)),
            )
        )
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for width, height in RESOLUTIONS:
            render(*poses[0], width, height)  # warm-up
            per_clip = []
            for identity, pose in poses:
                start = time.perf_counter()
                render(identity, pose, width, height)
                per_clip.append(time.perf_counter() - start)
            frames = sum(p.frames for _, p in poses)
            results.append(
                {
                    "width": width,
                    "height": height,
                    "threads": threads,
                    "frames_per_s": frames / sum(per_clip),
                    "clip_seconds": percentiles(per_clip),
                }
            )
    # On-the-fly training windows at the tiny preset's LR and HR sizes (what CPU training consumes).
    torch.set_num_threads(1)
    tiny = get_preset("tiny")
    windows = []
    for res in (tiny.lr, tiny.hr):
        spec = WindowSpec(frames=tiny.segment_video_frames + 1, width=res.width, height=res.height)
        start = time.perf_counter()
        count = sum(1 for _ in ProceduralWindows(range(clips), seconds, spec))
        elapsed = time.perf_counter() - start
        windows.append(
            {
                "width": res.width,
                "height": res.height,
                "frames": spec.frames,
                "windows_per_s": count / elapsed,
            }
        )
    return {
        "bench": "procedural render",
        **environment(),
        "clips": clips,
        "clip_frames": poses[0][1].frames,
        "speech_seconds_per_clip": percentiles(speech_s),
        "render": results,
        "on_the_fly_windows_1_thread": windows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print(write_report(run(args.clips, args.seconds), args.out))


if __name__ == "__main__":
    main()
