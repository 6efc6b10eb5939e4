"""`ihuman bench soak --minutes M`: does a server stay healthy over real hours of calls?

Starts `ihuman serve --bench-stamps` on loopback, opens `talkers` aiortc talker calls (marked
speech as their microphones, looped) and `viewers` receive-only peers spread over those sessions,
and every `sample_s` seconds records what leaks and drifts show in: the server's resident memory,
open files, threads, event-loop tasks and CPU time (its /metrics), the machine's CPU use and the
time its host stole from it (/proc/stat: a shared virtual machine slows down with nothing here to
show for it), and for every peer the frames received in the window and the received A/V offset
(the picture of each audio mark against the mark in the returned audio, both on this process's
clock). What was received is dropped after each window, so the harness itself stays flat however
long it runs.

The summary fits slopes after a warm-up (the first `warm_up_s`): memory in MB per 10 minutes with
the slope's 95 % margin, and for files, threads and tasks their growth; the A/V offset of each
peer against its first windows' value, and how many windows it left that by more than a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from prometheus_client.parser import text_string_to_metric_families

from engine.config import TimeBase
from ihuman.bench.calls import MARK_PERIOD_S, marked_speech, served
from ihuman.bench.machine import cpu_shares, machine_cpu_ticks
from ihuman.bench.timeline import ReceivedFrame, av_offsets, frame_latency, mark_delays, video_mark_times
from ihuman.bench.webrtc_mode import RATE, MarkedMicrophone, Received, read_audio, read_video
from transport import ice

SERVER_METRICS = {  # /metrics name -> sample key
    "process_resident_memory_bytes": "rss_mb",
    "ihuman_heap_in_use_bytes": "heap_in_use_mb",  # glibc only (transport.heap)
    "ihuman_heap_free_bytes": "heap_free_mb",
    "process_open_fds": "open_files",
    "ihuman_threads": "threads",
    "ihuman_asyncio_tasks": "tasks",
    "ihuman_sessions": "sessions",
    "process_cpu_seconds_total": "cpu_s",
}
SESSION_METRICS = {  # /metrics name (labelled by session) -> key
    "ihuman_fallback_frames_total": "fallback_frames",  # a counter: frames not fully refined
    "ihuman_target_delay_ms": "target_delay_ms",
    "ihuman_degrade_level": "degrade_level",
    "ihuman_relay_dropped_total": "relay_dropped",  # by kind: frames peers' senders fell behind by
    "ihuman_pacer_skipped_total": "pacer_skipped",  # by kind: what the session's pacer skipped
}


Taken = tuple[list[ReceivedFrame], list[tuple[float, int, np.ndarray]], list[float]]


@dataclass
class Peer:
    """One connection to the server: a talker (with its microphone) or a viewer of a session."""

    role: str
    session: str
    pc: RTCPeerConnection
    microphone: MarkedMicrophone  # a viewer's marks are its talker's
    received: Received = field(default_factory=Received)
    tasks: list[asyncio.Task] = field(default_factory=list)

    def take(self) -> Taken:
        """What came since the last call, and the marks sent so far (on the event loop)."""
        frames, self.received.frames = self.received.frames, []
        audio, self.received.audio = self.received.audio, []
        return frames, audio, list(self.microphone.sent_marks)

    def window(
        self,
        taken: Taken,
        seconds: float,
    ) -> dict:
        """fps and the median A/V offset (ms, + = picture late) of what `take` took: pure
        arithmetic, run off the event loop (reading the marks in 10 s of audio takes about 0.4 s
        a peer, and a loop held that long stamps every frame and piece that waited with the same
        late arrival time, which moved the offsets of the marks it held by up to 100 ms)."""
        frames, audio, marks = taken
        found = Received(audio=audio).heard_marks()
        heard, came = [(t, i) for t, _, i in found], [(t, i) for _, t, i in found]
        video = video_mark_times(frames, marks)
        offsets = [o for _, o in av_offsets(video, heard, marks)]
        on_arrival = [o for _, o in av_offsets(video, came, marks)]
        latencies = [ms for f in frames if (ms := frame_latency(f, marks)) is not None]
        return {
            "role": self.role,
            "session": self.session,
            "fps": len(frames) / seconds,
            "av_offset_ms": statistics.median(offsets) if offsets else None,
            # The same with each mark heard when its piece came: what delivery stalls add to it.
            "av_offset_on_arrival_ms": statistics.median(on_arrival) if on_arrival else None,
            # Each mark's delay from its sending to being heard and to being seen: which of the
            # two moved when a window's median offset did.
            "mark_delays_ms": [[round(a, 1), round(v, 1)] for a, v in mark_delays(video, heard, marks)],
            "latency_ms": statistics.median(latencies) if latencies else None,
        }

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()


async def _connect(url: str, microphone: MarkedMicrophone, session: str | None) -> Peer:
    pc = RTCPeerConnection(ice.configuration(()))
    if session is None:
        pc.addTrack(microphone)
    else:
        pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("control")
    peer = Peer("talker" if session is None else "viewer", session or "", pc, microphone)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        read = read_video(track, peer.received, lambda: None) if track.kind == "video" else None
        peer.tasks.append(asyncio.ensure_future(read or read_audio(track, peer.received)))

    await pc.setLocalDescription(await pc.createOffer())
    body = {"type": "offer", "sdp": pc.localDescription.sdp, "role": peer.role}
    if session is not None:
        body["session"] = session
    async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", json=body) as r:
        answer = await r.json()
        if r.status != 200:
            await pc.close()
            raise RuntimeError(f"the server refused a {peer.role} ({r.status}): {answer.get('error')}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    peer.session = answer["session"]
    return peer


def _windows(peers: list[Peer], taken: list, seconds: float) -> list[dict]:
    """Each peer's window of what was taken from it (on a thread: Peer.window says why)."""
    return [peer.window(t, seconds) for peer, t in zip(peers, taken, strict=True)]


async def server_sample(http: aiohttp.ClientSession, url: str) -> dict:
    """The server's memory (and its C heap's), files, threads, tasks and sessions; a fleet's
    (`ihuman serve --ray`) summed over its processes: the front and every worker. Under
    "per_session", by session id, what the server did to each stream (SESSION_METRICS): an A/V
    offset that moves can then be set beside the fallbacks, delay, degrade level and the frames its
    peers' senders lost behind their backlog (video: an encoder that fell behind) in its window."""
    async with http.get(f"{url}/metrics") as r:
        text = await r.text()
    out: dict = {}
    per_session: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SERVER_METRICS:
                key = SERVER_METRICS[sample.name]
                out[key] = out.get(key, 0.0) + sample.value
            elif sample.name in SESSION_METRICS and "session" in sample.labels:
                stream = per_session.setdefault(sample.labels["session"], {})
                key = SESSION_METRICS[sample.name]
                if "kind" in sample.labels:
                    key = f"{key}_{sample.labels['kind']}"
                stream[key] = sample.value
    for key in ("rss_mb", "heap_in_use_mb", "heap_free_mb"):
        if key in out:
            out[key] /= 2**20
    out["per_session"] = per_session
    return out


def slope_per_10_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per 10 minutes (None: under 2 points)."""
    if len(points) < 2 or np.ptp([t for t, _ in points]) == 0:
        return None
    t, y = np.asarray(points, dtype=np.float64).T
    return float(np.polyfit(t, y, 1)[0] * 600)


def slope_margin_per_10_min(points: list[tuple[float, float]]) -> float | None:
    """Half-width of the slope's 95 % interval, per 10 minutes (None: under 4 points).

    A server's memory swings by tens of MB between heap trims, so a 30-minute slope has a margin
    of several MB per 10 minutes: a slope under a bar of 1 MB per 10 minutes says little unless
    its margin is about that size too. Neighbouring samples are correlated (a swing spans
    several), which the plain least-squares error ignores; its variance is widened by
    (1 + r) / (1 - r), r the residuals' lag-1 correlation (an AR(1) model of them, r taken between
    0 and 0.9), so the interval is not falsely narrow."""
    if len(points) < 4 or np.ptp([t for t, _ in points]) == 0:
        return None
    t, y = np.asarray(points, dtype=np.float64).T
    slope, intercept = np.polyfit(t, y, 1)
    residuals = y - (slope * t + intercept)
    spread = float(((t - t.mean()) ** 2).sum())
    standard_error = np.sqrt(residuals @ residuals / (len(t) - 2) / spread)
    r = 0.0
    if residuals.std() > 0:
        r = float(np.clip(np.corrcoef(residuals[:-1], residuals[1:])[0, 1], 0.0, 0.9))
    return float(1.96 * standard_error * np.sqrt((1 + r) / (1 - r)) * 600)


def summarise(samples: list[dict], warm_up_s: float, frame_ms: float = TimeBase().frame_ms) -> dict:
    """Slopes and growth after the warm-up, fps, and each peer's A/V offset against its start
    (its largest change, and the windows where it changed by more than a frame)."""
    steady = [s for s in samples if s["t_s"] >= warm_up_s] or samples
    out: dict = {"warm_up_s": warm_up_s, "samples_after_warm_up": len(steady)}
    for key in ("rss_mb", "heap_in_use_mb", "heap_free_mb", "open_files", "threads", "tasks"):
        points = [(s["t_s"], s["server"][key]) for s in steady if key in s["server"]]
        values = [v for _, v in points]
        out[key] = {
            "slope_per_10_min": slope_per_10_min(points),
            "slope_margin_per_10_min": slope_margin_per_10_min(points),
            "first": values[0] if values else None,
            "last": values[-1] if values else None,
            "growth": (max(values) - values[0]) if values else None,
        }
    machine = [s["machine"] for s in steady if "machine" in s]
    if machine:
        out["machine"] = {
            f"{key}_{name}": statistic([m[key] for m in machine if key in m])
            for key in ("busy_pct", "steal_pct", "server_pct")
            for name, statistic in (("p50", statistics.median), ("max", max))
            if any(key in m for m in machine)
        }
    peers = len(samples[0]["peers"]) if samples else 0
    out["peers"] = []
    for i in range(peers):
        fps = [s["peers"][i]["fps"] for s in steady]
        offsets = [s["peers"][i]["av_offset_ms"] for s in steady if s["peers"][i]["av_offset_ms"] is not None]
        latencies = [
            s["peers"][i]["latency_ms"] for s in steady if s["peers"][i].get("latency_ms") is not None
        ]
        start = statistics.median(offsets[:3]) if offsets else None
        out["peers"].append(
            {
                "role": samples[0]["peers"][i]["role"],
                "session": samples[0]["peers"][i].get("session"),
                "fps_p50": statistics.median(fps) if fps else None,
                "latency_p50_ms": statistics.median(latencies) if latencies else None,
                "fps_min": min(fps) if fps else None,
                "av_offset_start_ms": start,
                "av_offset_max_deviation_ms": max(abs(o - start) for o in offsets) if offsets else None,
                "av_offset_windows": len(offsets),
                "av_offset_windows_over_a_frame": sum(int(abs(o - start) > frame_ms) for o in offsets),
            }
        )
    return out


async def run_soak(
    server_arguments: list[str],
    speech16k: np.ndarray,
    minutes: float,
    talkers: int,
    viewers: int,
    sample_s: float = 10.0,
    progress: Callable[[float], None] = lambda _: None,
) -> dict:
    """Soak a server started with `server_arguments` for `minutes`; the report's samples and summary."""
    seconds = minutes * 60
    speech = np.interp(np.arange(round(len(speech16k) * 3)) / 3, np.arange(len(speech16k)), speech16k)
    ice.use_host_addresses(["127.0.0.1"])
    arguments = [*server_arguments, "--max-sessions", str(talkers)]  # a fleet's come with it
    samples: list[dict] = []
    async with served(arguments) as (url, _process, _started), aiohttp.ClientSession() as http:
        peers: list[Peer] = []
        try:
            for _ in range(talkers):
                audio, onsets = marked_speech(speech, RATE, seconds + 60 + 2 * MARK_PERIOD_S)
                peers.append(await _connect(url, MarkedMicrophone(audio, onsets), None))
            for i in range(viewers):
                talker = peers[i % talkers]
                peers.append(await _connect(url, talker.microphone, talker.session))
            started = time.perf_counter()
            next_sample = started + sample_s
            ticks, server_cpu_s = machine_cpu_ticks(), None
            while (now := time.perf_counter()) - started < seconds:
                await asyncio.sleep(max(0.0, next_sample - now))
                window = time.perf_counter() - (next_sample - sample_s)
                next_sample += sample_s
                t_s, taken = time.perf_counter() - started, [p.take() for p in peers]
                server = await server_sample(http, url)
                windows = await asyncio.to_thread(_windows, peers, taken, window)
                sample = {"t_s": t_s, "server": server, "peers": windows}
                if ticks is not None and (now_ticks := machine_cpu_ticks()) is not None:
                    sample["machine"] = cpu_shares(ticks, now_ticks)
                    ticks = now_ticks
                    if server_cpu_s is not None and "cpu_s" in server:
                        spent = server["cpu_s"] - server_cpu_s
                        sample["machine"]["server_pct"] = 100 * spent / (window * (os.cpu_count() or 1))
                server_cpu_s = server.get("cpu_s")
                samples.append(sample)
                progress(min(1.0, (time.perf_counter() - started) / seconds))
        finally:
            for peer in peers:
                with contextlib.suppress(Exception):  # a peer the server already dropped
                    await peer.close()
    return {"talkers": talkers, "viewers": viewers, "sample_s": sample_s, "samples": samples}


def markdown(report: dict) -> str:
    """report.md: the verdicts first, then the numbers they rest on."""
    s, machine = report["summary"], report["machine"]
    lines = [
        "# ihuman bench soak",
        "",
        f"{machine.get('cpu')} ({machine.get('cpus')} CPUs), GPU: {machine.get('gpu') or 'none'}; "
        f"torch {machine.get('torch')}, commit {machine.get('commit')}, {machine.get('time')}.",
        "",
        f"{report['minutes']:g} minutes, {report['talkers']} talkers + {report['viewers']} viewers, "
        f"{report['settings'].get('video')} video, {report['settings'].get('weights')} weights, "
        f"a sample every {report['sample_s']:g} s; slopes after the first {s['warm_up_s']:g} s.",
        "",
        "| server | first | last | slope per 10 min (± its 95 % margin) | growth |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("rss_mb", "memory (MB)"), ("heap_in_use_mb", "C heap in use (MB)"),
                       ("heap_free_mb", "C heap held free (MB)"), ("open_files", "open files"),
                       ("threads", "threads"), ("tasks", "event-loop tasks")):  # fmt: skip
        v = s.get(key)
        if v is None or v["first"] is None:  # a report from before the heap's numbers, or no glibc
            continue
        slope = "-" if v["slope_per_10_min"] is None else f"{v['slope_per_10_min']:+.2f}"
        if v.get("slope_margin_per_10_min") is not None:  # reports from before it lack it
            slope += f" ± {v['slope_margin_per_10_min']:.2f}"
        lines.append(f"| {label} | {v['first']:g} | {v['last']:g} | {slope} | {v['growth']:g} |")
    if m := s.get("machine"):  # reports from before it lack it
        lines += [
            "",
            f"The machine's CPU (% of all its CPUs, median / largest of the windows): busy "
            f"{m['busy_pct_p50']:.0f} / {m['busy_pct_max']:.0f}, the server "
            f"{m.get('server_pct_p50', float('nan')):.0f} / {m.get('server_pct_max', float('nan')):.0f}, "
            f"stolen by its host {m['steal_pct_p50']:.1f} / {m['steal_pct_max']:.1f}.",
        ]
    lines += [
        "",
        "| peer | fps p50 / min | latency p50 (ms) | A/V offset at start (ms) | its largest change (ms) "
        "| windows changed by more than a frame |",
        "|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(s["peers"]):
        start = "-" if p["av_offset_start_ms"] is None else f"{p['av_offset_start_ms']:.0f}"
        change = "-" if p["av_offset_max_deviation_ms"] is None else f"{p['av_offset_max_deviation_ms']:.0f}"
        latency = "-" if p.get("latency_p50_ms") is None else f"{p['latency_p50_ms']:.0f}"
        fps = f"{p['fps_p50']:.1f} / {p['fps_min']:.1f}"
        over = f"{p.get('av_offset_windows_over_a_frame', '-')} of {p['av_offset_windows']}"
        lines.append(f"| {i + 1} ({p['role']}) | {fps} | {latency} | {start} | {change} | {over} |")
    return "\n".join([*lines, "", "![soak](soak.png)", ""])


def plot(report: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (the bench extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    samples = report["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(5, 1, figsize=(9, 12), sharex=True)
    for key, label in (
        ("rss_mb", "resident"),
        ("heap_in_use_mb", "C heap in use"),
        ("heap_free_mb", "C heap free"),
    ):
        if any(key in s["server"] for s in samples):
            axes[0].plot(minutes, [s["server"].get(key) for s in samples], label=label)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("server memory (MB)")
    for key in ("open_files", "threads", "tasks"):
        axes[1].plot(minutes, [s["server"].get(key) for s in samples], label=key.replace("_", " "))
    axes[1].legend(fontsize=8)
    axes[1].set_ylabel("count")
    for i in range(len(samples[0]["peers"]) if samples else 0):
        label = f"{i + 1} {samples[0]['peers'][i]['role']}"
        axes[2].plot(minutes, [s["peers"][i]["fps"] for s in samples], label=label)
        axes[3].plot(minutes, [s["peers"][i]["av_offset_ms"] for s in samples], label=label)
    axes[2].set_ylabel("fps received")
    axes[3].set_ylabel("A/V offset (ms, + = picture late)")
    shares = (("busy_pct", "busy"), ("server_pct", "the server"), ("steal_pct", "stolen by the host"))
    for key, label in shares:
        axes[4].plot(minutes, [s.get("machine", {}).get(key) for s in samples], label=label)
    axes[4].set_ylabel("machine CPU (%)")
    axes[4].set_xlabel("minutes")
    for ax in axes[2:]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
