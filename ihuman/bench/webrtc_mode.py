"""`ihuman bench latency --mode webrtc`: a real `ihuman serve` and an aiortc client, glass to glass.

The harness starts `ihuman serve --bench-stamps` as a subprocess on loopback (or uses the server
`--server URL` names), sends speech with tone marks as its microphone, and reads the code every
received frame carries (transport/stamps.py). All times are the client's: a frame's latency is
when it was decoded here minus when the last audio sample it waited for left here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ihuman.bench.machine import ProcessUsage
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
from transport import ice, messages
from transport.server import is_loopback
from transport.stamps import find_marks, mark_burst, read_code

RATE = 48_000  # what WebRTC audio runs at
PIECE = 960  # 20 ms
MARK_PERIOD_S = 1.0
MARK_LEAD_S = 1.0  # the first mark, after the connection has settled
CODECS = {"h264": "video/H264", "vp8": "video/VP8"}


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


class MarkedMicrophone(MediaStreamTrack):
    """Plays prepared samples in 20 ms frames on the real clock and notes when each mark left."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, onsets: list[int]) -> None:
        super().__init__()
        self._pcm = (np.clip(samples, -1, 1) * 32767).round().astype(np.int16)
        self._onsets = onsets
        self._position = 0
        self._start: float | None = None
        self.sent_marks: list[float] = []  # client clock, seconds: when each mark's onset left

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.perf_counter()
        due = self._start + self._position / RATE
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        handed = time.perf_counter()  # if we run late, the samples leave late: count that
        stop = self._position + PIECE
        chunk = self._pcm[self._position : stop]
        if chunk.size < PIECE:
            chunk = np.concatenate([chunk, np.zeros(PIECE - chunk.size, np.int16)])
        for onset in self._onsets[len(self.sent_marks) :]:
            if onset >= stop:
                break
            self.sent_marks.append(handed + (onset - self._position) / RATE)
        frame = av.AudioFrame.from_ndarray(np.repeat(chunk, 2)[None], format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, self._position
        frame.time_base = fractions.Fraction(1, RATE)
        self._position = stop
        return frame


@dataclass
class Received:
    frames: list[ReceivedFrame] = field(default_factory=list)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (when it came, 48 kHz mono)
    stats: list[dict] = field(default_factory=list)  # the server's own once-a-second stats

    def audio_marks(self) -> list[tuple[float, int]]:
        """(when it came, mark id) of each mark in the returned audio (client clock): a piece's
        samples are taken to play from the moment it was received."""
        if not self.audio:
            return []
        starts = np.cumsum([0] + [len(s) for _, s in self.audio])
        onsets = find_marks(np.concatenate([s for _, s in self.audio]), RATE)
        out = []
        for onset, mark_id in onsets:
            i = int(np.searchsorted(starts, onset, side="right")) - 1
            out.append((self.audio[i][0] + (onset - starts[i]) / RATE, mark_id))
        return out


async def _read_video(track: MediaStreamTrack, received: Received, on_first: Callable[[], None]) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.perf_counter()
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
        received.frames.append(ReceivedFrame(now, read_code(luma)))
        if len(received.frames) == 1:
            on_first()


async def _read_audio(track: MediaStreamTrack, received: Received) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        samples = frame.to_ndarray().astype(np.float32) / 32768
        received.audio.append(
            (time.perf_counter(), samples.reshape(-1, frame.layout.nb_channels).mean(axis=1))
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def served(
    arguments: list[str], timeout_s: float = 600.0
) -> AsyncIterator[tuple[str, subprocess.Popen, float]]:
    """`ihuman serve --bench-stamps ARGUMENTS` on a free loopback port: (url, process, start time)."""
    port = free_port()
    command = [sys.executable, "-m", "ihuman", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--bench-stamps", "--ice-address", "127.0.0.1", "--max-sessions", "1", *arguments]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"ihuman serve exited ({process.returncode}):\n{process.stdout.read()}"
                    )
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"ihuman serve did not answer within {timeout_s:.0f} s")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield url, process, started
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def measure_call(
    url: str,
    speech: np.ndarray,
    seconds: float,
    codec: str,
    progress: Callable[[float], None] = lambda _: None,
) -> tuple[Received, MarkedMicrophone, float, float | None]:
    """One talker call of `seconds`: (what came back, the microphone, offer time, first frame time)."""
    samples, onsets = marked_speech(speech, RATE, seconds + 2 * MARK_PERIOD_S)
    microphone = MarkedMicrophone(samples, onsets)
    pc = RTCPeerConnection(ice.configuration(()))
    received = Received()
    first: list[float] = []
    tasks: list[asyncio.Task] = []
    pc.addTrack(microphone)
    video = pc.addTransceiver("video", direction="recvonly")
    video.setCodecPreferences(
        [
            c
            for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType in (CODECS[codec], "video/rtx")
        ]
    )
    channel = pc.createDataChannel("control")

    @channel.on("message")
    def on_message(data: bytes) -> None:
        with contextlib.suppress(messages.MessageError):
            message = messages.parse(data)
            if message.get("type") == "stats":
                received.stats.append(message)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            tasks.append(
                asyncio.ensure_future(_read_video(track, received, lambda: first.append(time.perf_counter())))
            )
        else:
            tasks.append(asyncio.ensure_future(_read_audio(track, received)))

    await pc.setLocalDescription(await pc.createOffer())
    offered = time.perf_counter()
    headers = (
        {"Authorization": f"Bearer {os.environ['IHUMAN_TOKEN']}"} if os.environ.get("IHUMAN_TOKEN") else {}
    )
    body = {"type": "offer", "sdp": pc.localDescription.sdp, "role": "talker"}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", json=body, headers=headers) as r:
        answer = await r.json()
        if r.status != 200:
            await pc.close()
            raise RuntimeError(f"the server refused the offer ({r.status}): {answer.get('error')}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    try:
        while not first:
            if time.perf_counter() - offered > 120:
                raise RuntimeError("no video within 120 s of the offer")
            await asyncio.sleep(0.05)
        while (elapsed := time.perf_counter() - first[0]) < seconds:
            progress(elapsed / seconds)
            await asyncio.sleep(0.25)
        progress(1.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pc.close()
    return received, microphone, offered, first[0] if first else None


def call_report(
    received: Received,
    microphone: MarkedMicrophone,
    offered: float,
    first: float | None,
    server_started: float | None,
) -> dict:
    latencies = [frame_latency(f, microphone.sent_marks) for f in received.frames]
    moments = [moment_delay(f, microphone.sent_marks) for f in received.frames]
    audio_marks = received.audio_marks()
    offsets = av_offsets(
        video_mark_times(received.frames, microphone.sent_marks), audio_marks, microphone.sent_marks
    )
    origin = offered
    timeline = [
        {
            "frame": f.stamp.frame if f.stamp else None,
            "emitted_s": f.received - origin,
            "mark": f.stamp.mark if f.stamp else None,
            "latency_ms": latency,
            "moment_delay_ms": moment,
        }
        for f, latency, moment in zip(received.frames, latencies, moments, strict=True)
    ]
    decoded = sum(f.stamp is not None for f in received.frames)
    server_stats = received.stats[-1] if received.stats else {}
    glass = summary([x for x in latencies if x is not None])
    engine_p50 = server_stats.get("latency_p50_ms")
    return {
        "added_latency_ms": glass,
        # Speaker -> picture of that moment (what the viewer sees as the picture's delay).
        "picture_delay_ms": summary([x for x in moments if x is not None]),
        # What the network, codecs, buffers and anything before the engine add: glass to glass
        # against the server's own view (its audio arrival -> frame emitted), both p50.
        "outside_engine_ms": None if glass is None or engine_p50 is None else glass["p50"] - engine_p50,
        "first_frame_ms": {
            "warm": None if first is None else (first - offered) * 1000,
            "cold": None if first is None or server_started is None else (first - server_started) * 1000,
        },
        "frame_rate": frame_rate([f.received for f in received.frames]),
        "frames": len(received.frames),
        "codes_decoded": decoded / max(len(received.frames), 1),
        "marks": {"sent": len(microphone.sent_marks), "heard_back": len(audio_marks)},
        "fallbacks": server_stats.get("fallbacks"),
        "fallback_rate": (server_stats.get("fallbacks") or 0) / max(server_stats.get("frames") or 1, 1),
        "degrade_level_final": server_stats.get("degrade_level"),
        "server_reported_latency_p50_ms": engine_p50,
        "av_sync": {
            "mean_ms": float(np.mean([o for _, o in offsets])) if offsets else None,
            "drift_ms_per_min": drift(offsets),
            "offsets": [(t - origin, o) for t, o in offsets],
        },
        "timeline": timeline,
    }


async def run_webrtc(
    server_arguments: list[str],
    speech16k: np.ndarray,
    seconds: float,
    codec: str,
    server_url: str | None = None,
    progress: Callable[[float], None] = lambda _: None,
) -> dict:
    speech = np.interp(np.arange(round(len(speech16k) * 3)) / 3, np.arange(len(speech16k)), speech16k)
    if server_url is None or is_loopback(urlsplit(server_url).hostname or ""):
        ice.use_host_addresses(["127.0.0.1"])  # a call on this machine stays on loopback
    if server_url is not None:
        call = await measure_call(server_url, speech, seconds, codec, progress)
        return {**call_report(*call, server_started=None), "server": server_url}
    async with served(server_arguments) as (url, process, started):
        usage = ProcessUsage(process.pid)
        usage.start()
        call = await measure_call(url, speech, seconds, codec, progress)
        report = call_report(*call, server_started=started)
        report["cpu_percent"] = usage.cpu_percent()
        report["peak_rss_mb"] = usage.peak_rss_mb()
        return report
