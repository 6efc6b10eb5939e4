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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ihuman.bench.calls import MARK_PERIOD_S, call_metrics, marked_speech, served
from ihuman.bench.machine import ProcessUsage
from ihuman.bench.timeline import ReceivedFrame
from transport import ice, messages, retransmission
from transport.server import is_loopback
from transport.stamps import find_marks, read_code
from transport.tracks import luma_plane, mono_samples

RATE = 48_000  # what WebRTC audio runs at
PIECE = 960  # 20 ms
PLAYOUT_SPAN_S = 1.0  # the returned audio around a mark whose arrivals say when it played
CODECS = {"h264": "video/H264", "vp8": "video/VP8"}


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
    # (when it came, where it starts in the stream in samples, its 48 kHz mono samples)
    audio: list[tuple[float, int, np.ndarray]] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)  # the server's own once-a-second stats

    def audio_marks(self) -> list[tuple[float, int]]:
        """(when it was heard, mark id) of each mark in the returned audio (client clock): see
        heard_marks."""
        return [(played, mark_id) for played, _, mark_id in self.heard_marks()]

    def heard_marks(self) -> list[tuple[float, float, int]]:
        """(when it played, when its piece came, mark id) of each mark in the returned audio.

        Played as a player with a jitter buffer plays it: at the stream's own rate, from the typical
        arrival of the pieces around the mark (the median, over PLAYOUT_SPAN_S of the stream around
        it, of each piece's arrival less its place in the stream). A stall in delivery that holds a
        few pieces and lets them go in a burst then moves a mark no more than it moves the mark's
        picture, whose moment is likewise the median over its frames (video_mark_times). When its
        piece came is when a player without a buffer would play it: as late as that one piece."""
        if not self.audio:
            return []
        arrivals = np.array([when for when, _, _ in self.audio])
        places = np.array([place for _, place, _ in self.audio], dtype=np.int64)
        starts = np.cumsum([0] + [len(s) for _, _, s in self.audio])
        zero = arrivals - places / RATE  # when each piece says the stream's first sample played
        out = []
        for onset, mark_id in find_marks(np.concatenate([s for _, _, s in self.audio]), RATE):
            i = int(np.searchsorted(starts, onset, side="right")) - 1
            place = places[i] + onset - starts[i]
            near = np.abs(places - place) <= PLAYOUT_SPAN_S * RATE / 2
            came = arrivals[i] + (onset - starts[i]) / RATE
            out.append((float(np.median(zero[near])) + place / RATE, float(came), mark_id))
        return out


async def read_video(track: MediaStreamTrack, received: Received, on_first: Callable[[], None]) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        received.frames.append(ReceivedFrame(time.perf_counter(), read_code(luma_plane(frame))))
        if len(received.frames) == 1:
            on_first()


async def read_audio(track: MediaStreamTrack, received: Received) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        # aiortc gives a decoded piece its RTP timestamp (from 0, unwrapped) as pts: its place in
        # the stream, which a piece the sender skipped or the network lost leaves a gap in.
        received.audio.append((time.perf_counter(), int(frame.pts), mono_samples(frame)))


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
    retransmission.install()  # a viewer that recovers from loss as the server's own peers do
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
                asyncio.ensure_future(read_video(track, received, lambda: first.append(time.perf_counter())))
            )
        else:
            tasks.append(asyncio.ensure_future(read_audio(track, received)))

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
    server_stats = received.stats[-1] if received.stats else {}
    report = call_metrics(
        received.frames, microphone.sent_marks, received.audio_marks(), offered, first, server_stats
    )
    report["first_frame_ms"]["cold"] = (
        None if first is None or server_started is None else (first - server_started) * 1000
    )
    return report


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
