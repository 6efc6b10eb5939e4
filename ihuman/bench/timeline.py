"""The harness's arithmetic on timelines: percentiles, frame rate windows, jitter, the matching of
received frames to the audio the client sent, and A/V drift. Pure functions, tested on synthetic
timelines with known answers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from transport.stamps import MARK_IDS, FrameStamp


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """p50/p90/p99/max/mean of `values` (None when there are none)."""
    if len(values) == 0:
        return None
    x = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(x.max()),
        "mean": float(x.mean()),
    }


def frame_rate(times: Sequence[float], window_s: float = 1.0) -> dict[str, float] | None:
    """Sustained fps over the whole run and in its worst `window_s` window, and the frame-interval
    statistics (ms): p50, p99, max and the standard deviation (jitter)."""
    t = np.sort(np.asarray(times, dtype=np.float64))
    if t.size < 2:
        return None
    sustained = (t.size - 1) / (t[-1] - t[0])
    # Frames in [t_i, t_i + window) for every start t_i that leaves a whole window.
    starts = t[t <= t[-1] - window_s]
    counts = np.searchsorted(t, starts + window_s, side="left") - np.searchsorted(t, starts, side="left")
    worst = float(counts.min() / window_s) if counts.size else float(sustained)
    gaps = np.diff(t) * 1000
    return {
        "sustained_fps": float(sustained),
        "worst_window_fps": worst,
        "interval_p50_ms": float(np.percentile(gaps, 50)),
        "interval_p99_ms": float(np.percentile(gaps, 99)),
        "interval_max_ms": float(gaps.max()),
        "jitter_ms": float(gaps.std()),
    }


def stage_overlap(rows: Sequence[dict]) -> float | None:
    """The fraction of the refine stage's time that ran while the low-res stage was also running
    (on two CUDA streams or CPU threads): 1 = refining is hidden entirely under the next segments'
    generation, 0 = the stages ran one after the other. rows: a timeline's frames, whose
    low_res_start_s/low_res_end_s and refine_start_s/refine_end_s repeat for every frame of a
    segment. None without a refined segment."""
    low = sorted(
        {(r["low_res_start_s"], r["low_res_end_s"]) for r in rows if r.get("low_res_end_s") is not None}
    )
    refine = {(r["refine_start_s"], r["refine_end_s"]) for r in rows if r.get("refine_end_s") is not None}
    refine = {(a, b) for a, b in refine if a is not None and b > a}
    total = sum(b - a for a, b in refine)
    if total <= 0:
        return None
    hidden = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in refine for lo, hi in low)
    return hidden / total


@dataclass(frozen=True)
class ReceivedFrame:
    """A frame as the client saw it: when it was received and what its code said."""

    received: float  # client clock, seconds
    stamp: FrameStamp | None  # None: no readable code


def frame_latency(frame: ReceivedFrame, sent_marks: Sequence[float]) -> float | None:
    """Glass-to-glass latency (ms) of a frame whose code names a mark: when it came, against the
    mark's send time (client clock) plus the stamped distance from the mark to the end of the
    frame's audio. None: no code, no mark yet, or a mark that was never sent."""
    number = mark_number(frame, sent_marks)
    if number is None or frame.stamp is None:
        return None
    return (frame.received - sent_marks[number] - frame.stamp.end_ms / 1000) * 1000


def moment_delay(frame: ReceivedFrame, sent_marks: Sequence[float]) -> float | None:
    """How long after the moment a frame shows was spoken (sent) the frame came, in ms: the
    delay a viewer sees between the speaker and the picture (lip sync against the sender)."""
    number = mark_number(frame, sent_marks)
    if number is None or frame.stamp is None:
        return None
    return (frame.received - sent_marks[number] - frame.stamp.center_ms / 1000) * 1000


def mark_number(frame: ReceivedFrame, sent_marks: Sequence[float]) -> int | None:
    """Which sent mark a frame's stamp names: marks are numbered in the order sent and a stamp
    carries the number modulo MARK_IDS, so it is the newest such mark sent before the frame came
    (unambiguous while the latency stays under MARK_IDS mark periods)."""
    if frame.stamp is None or frame.stamp.mark is None:
        return None
    return unwrap(frame.stamp.mark, sent_marks, frame.received)


def unwrap(mark_id: int, sent_marks: Sequence[float], before: float) -> int | None:
    """The newest mark sent before `before` whose number is `mark_id` modulo MARK_IDS."""
    candidates = [n for n in range(mark_id, len(sent_marks), MARK_IDS) if sent_marks[n] < before]
    return candidates[-1] if candidates else None


def video_mark_times(
    frames: Sequence[ReceivedFrame], sent_marks: Sequence[float], window_ms: float = 200.0
) -> dict[int, float]:
    """When each sent mark's moment was on screen (client clock), by mark number: the frames
    stamped near it (within `window_ms` of the onset) each say how far they sit from it; their
    median time, moved back by that distance, is when the onset itself showed."""
    per_mark: dict[int, list[float]] = {}
    for f in frames:
        number = mark_number(f, sent_marks)
        if number is None or f.stamp is None or abs(f.stamp.center_ms) > window_ms:
            continue
        per_mark.setdefault(number, []).append(f.received - f.stamp.center_ms / 1000)
    return {number: float(np.median(times)) for number, times in per_mark.items()}


def _in_both(
    video: dict[int, float], audio: Sequence[tuple[float, int]], sent_marks: Sequence[float]
) -> Iterator[tuple[int, float]]:
    """(mark number, when it was heard) of each mark in the returned audio that was also seen."""
    for heard, mark_id in audio:
        number = unwrap(mark_id, sent_marks, heard)
        if number is not None and number in video:
            yield number, heard


def av_offsets(
    video: dict[int, float], audio: Sequence[tuple[float, int]], sent_marks: Sequence[float]
) -> list[tuple[float, float]]:
    """(time, video - audio in ms) per mark seen in both: positive means the picture is late.
    `audio`: (when, mark id) of the returned audio's marks; `video`: from video_mark_times."""
    return [(heard, (video[n] - heard) * 1000) for n, heard in _in_both(video, audio, sent_marks)]


def mark_delays(
    video: dict[int, float], audio: Sequence[tuple[float, int]], sent_marks: Sequence[float]
) -> list[tuple[float, float]]:
    """(heard, seen) in ms after sending, per mark seen in both: the two sides of av_offsets."""
    return [
        ((heard - sent_marks[n]) * 1000, (video[n] - sent_marks[n]) * 1000)
        for n, heard in _in_both(video, audio, sent_marks)
    ]


def drift(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of the A/V offset over time, in ms per minute (None: under 2 points)."""
    if len(points) < 2:
        return None
    t, offset = np.asarray(points, dtype=np.float64).T
    if np.ptp(t) == 0:
        return None
    return float(np.polyfit(t, offset, 1)[0] * 60)
