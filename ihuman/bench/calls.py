"""What the webrtc and browser modes share: the marked speech a talker sends, the `ihuman serve`
they call, and the metrics of one call computed from what the client saw (its clock only)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from typing import IO

import aiohttp
import numpy as np

from ihuman.bench.timeline import (
    ReceivedFrame,
    av_offsets,
    drift,
    frame_latency,
    frame_rate,
    moment_delay,
    summary,
    video_mark_times,
)
from transport.stamps import mark_burst

MARK_PERIOD_S = 1.0
MARK_LEAD_S = 1.0  # the first mark, after the connection has settled


def marked_speech(speech: np.ndarray, rate: int, seconds: float) -> tuple[np.ndarray, list[int]]:
    """`seconds` of `speech` (looped) at `rate` with a mark every MARK_PERIOD_S after MARK_LEAD_S;
    the speech is silenced 50 ms around each mark so that nothing else sounds like one.
    Returns the samples and the marks' onsets (sample indices)."""
    n = round(seconds * rate)
    audio = np.resize(speech.astype(np.float32), n)
    size = mark_burst(rate).size
    guard = round(0.05 * rate)
    onsets = list(range(round(MARK_LEAD_S * rate), n - size - guard, round(MARK_PERIOD_S * rate)))
    for number, onset in enumerate(onsets):
        audio[max(0, onset - guard) : onset + size + guard] = 0.0
        audio[onset : onset + size] = mark_burst(rate, number)
    return audio, onsets


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def served(
    arguments: list[str], timeout_s: float = 600.0
) -> AsyncIterator[tuple[str, subprocess.Popen, float]]:
    """`ihuman serve --bench-stamps ARGUMENTS` on a free loopback port: (url, process, start time).

    Its output goes to a temporary file, not a pipe: a pipe nobody reads while the call runs would
    fill up and stop the server mid-measurement."""
    port = free_port()
    command = [sys.executable, "-m", "ihuman", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--bench-stamps", "--ice-address", "127.0.0.1", "--max-sessions", "1", *arguments]
    with tempfile.TemporaryFile(mode="w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            await _until_healthy(url, process, log, started + timeout_s)
            yield url, process, started
        finally:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


async def _until_healthy(url: str, process: subprocess.Popen, log: IO[str], deadline: float) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"ihuman serve exited ({process.returncode}):\n{log.read()[-5000:]}")
            if time.perf_counter() > deadline:
                raise RuntimeError("ihuman serve did not answer /health in time")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)


def call_metrics(
    frames: Sequence[ReceivedFrame],
    sent_marks: Sequence[float],
    audio_marks: Sequence[tuple[float, int]],
    origin: float,
    first: float | None,
    server_stats: dict,
) -> dict:
    """The metrics of one call. `sent_marks[n]`: when mark n left (inf: not seen leaving);
    `audio_marks`: (when, id) of the marks in the returned audio; `origin`: the call's start
    (offer, or the page's microphone); `server_stats`: the server's last stats message."""
    latencies = [frame_latency(f, sent_marks) for f in frames]
    moments = [moment_delay(f, sent_marks) for f in frames]
    offsets = av_offsets(video_mark_times(frames, sent_marks), audio_marks, sent_marks)
    timeline = [
        {
            "frame": f.stamp.frame if f.stamp else None,
            "emitted_s": f.received - origin,
            "mark": f.stamp.mark if f.stamp else None,
            "latency_ms": latency,
            "moment_delay_ms": moment,
        }
        for f, latency, moment in zip(frames, latencies, moments, strict=True)
    ]
    glass = summary([x for x in latencies if x is not None])
    engine_p50 = server_stats.get("latency_p50_ms")
    return {
        "added_latency_ms": glass,
        # Speaker -> picture of that moment (what the viewer sees as the picture's delay).
        "picture_delay_ms": summary([x for x in moments if x is not None]),
        # What the network, codecs, buffers and anything before the engine add: glass to glass
        # against the server's own view (its audio arrival -> frame emitted), both p50.
        "outside_engine_ms": None if glass is None or engine_p50 is None else glass["p50"] - engine_p50,
        "first_frame_ms": {"warm": None if first is None else (first - origin) * 1000, "cold": None},
        "frame_rate": frame_rate([f.received for f in frames]),
        "frames": len(frames),
        "codes_decoded": sum(f.stamp is not None for f in frames) / max(len(frames), 1),
        "marks": {"sent": int(np.isfinite(sent_marks).sum()), "heard_back": len(audio_marks)},
        "fallbacks": server_stats.get("fallbacks"),
        "fallback_rate": server_stats["fallbacks"] / max(server_stats["frames"], 1) if server_stats else None,
        "degrade_level_final": server_stats.get("degrade_level"),
        "server_reported_latency_p50_ms": engine_p50,
        "stage_ms": {  # the server's own, from its last stats message
            name: None if v is None else {"p50": v[0], "p99": v[1]}
            for name, v in (server_stats.get("stage_ms") or {}).items()
        },
        "av_sync": {
            "mean_ms": float(np.mean([o for _, o in offsets])) if offsets else None,
            "drift_ms_per_min": drift(offsets),
            "offsets": [(t - origin, o) for t, o in offsets],
        },
        "timeline": timeline,
    }
