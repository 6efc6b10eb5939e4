"""A server on loopback and an aiortc client for the transport tests (all traffic stays on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.data.clip import make_clip
from engine.parts import Parts
from engine.streaming.engine import Engine
from engine.streaming.session import SessionOptions
from transport import ice, messages
from transport.server import Server, ServerSettings, local_server, prepare_webrtc
from transport.tracks import luma_plane, mono_samples

LOOPBACK = ("127.0.0.1",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def running_server(
    parts: Parts, picture_seed: int = 5, **settings: object
) -> AsyncIterator[tuple[Server, str]]:
    """A server on 127.0.0.1 offering only loopback ICE candidates; yields (server, base URL).
    A talker that uploads no picture gets the procedural character `picture_seed`."""
    port = free_port()
    options = settings.pop("session_options", SessionOptions(target_delay_ms=900))
    settings.setdefault("request_burst", 1000)  # the tests send more offers than a person would
    config = ServerSettings(port=port, ice_addresses=LOOPBACK, session_options=options, **settings)  # type: ignore[arg-type]
    hr = parts.config.hr
    picture = make_clip(picture_seed, 0.04, hr.width, hr.height).frames[0]
    prepare_webrtc(config)
    server = local_server(Engine(parts), config, lambda: picture)
    async with listening(server, port) as url:
        yield server, url


@contextlib.asynccontextmanager
async def listening(server: Server, port: int) -> AsyncIterator[str]:
    """The server's routes on 127.0.0.1:port; yields its base URL."""
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class StampedTrack(MediaStreamTrack):
    """Passes a track's frames on, noting when each left and its samples (the sent audio's timeline)."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.sent: list[tuple[float, np.ndarray, int]] = []  # (time, mono float samples, rate)

    async def recv(self) -> av.AudioFrame:
        frame = await self.source.recv()
        samples = frame.to_ndarray().astype(np.float32).reshape(-1, frame.layout.nb_channels).mean(axis=1)
        self.sent.append((time.perf_counter(), samples / 32768, frame.sample_rate))
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


@dataclass
class Client:
    """An aiortc peer: sends a WAV (or nothing: viewer), records video, audio and data messages."""

    pc: RTCPeerConnection
    frames: list[tuple[float, int, np.ndarray]] = field(default_factory=list)  # (arrival, pts, luma)
    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival, 48 kHz mono)
    messages: list[dict] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    session: str | None = None
    microphone: StampedTrack | None = None
    keep_images: bool = True

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()
        if self.microphone is not None:
            self.microphone.stop()


async def _record_video(client: Client, track: MediaStreamTrack) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        luma = luma_plane(frame)  # the server and the clients share one event loop
        client.frames.append(
            (time.perf_counter(), frame.pts, luma.copy() if client.keep_images else luma[:0])
        )


async def _record_audio(client: Client, track: MediaStreamTrack) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        client.audio.append((time.perf_counter(), mono_samples(frame)))


async def connect(
    url: str,
    wav: Path | None = None,
    session: str | None = None,
    *,
    sent_offer: Callable[[str], str] = lambda sdp: sdp,
    answer: Callable[[str], Awaitable[str]] | None = None,
    **fields: object,
) -> Client:
    """Offer to the server as a talker (wav) or a viewer (session), like the browser page does.
    sent_offer and answer may change the SDPs on their way (a lossy link's relay)."""
    pc = RTCPeerConnection(ice.configuration(()))
    client = Client(pc)
    if wav is not None:
        client.microphone = StampedTrack(MediaPlayer(str(wav)).audio)
        pc.addTrack(client.microphone)
    else:
        pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("control")

    @channel.on("message")
    def on_message(data: bytes) -> None:
        client.messages.append(messages.parse(data))

    client.channel = channel  # type: ignore[attr-defined]

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        record = _record_video if track.kind == "video" else _record_audio
        client.tasks.append(asyncio.ensure_future(record(client, track)))

    await pc.setLocalDescription(await pc.createOffer())
    role = "viewer" if wav is None else "talker"
    body = {"type": "offer", "sdp": sent_offer(pc.localDescription.sdp), "role": role}
    if session:
        body["session"] = session
    body.update(fields)
    async with aiohttp.ClientSession() as http, http.post(f"{url}/offer", json=body) as response:
        reply = await response.json()
        if response.status != 200:
            await pc.close()
            raise RuntimeError(f"{response.status}: {reply}")
    client.session = reply["session"]
    sdp = reply["sdp"] if answer is None else await answer(reply["sdp"])
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
    return client


def wav_samples(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
    data = np.concatenate(frames, axis=1)
    return (data.astype(np.float32) / 32768).mean(axis=0) if data.dtype == np.int16 else data.mean(axis=0)


def envelope(
    pieces: list[tuple[float, np.ndarray, int]], start: float, stop: float, *, ends: bool
) -> np.ndarray:
    """RMS per 10 ms on the wall clock from (time, samples, rate) pieces; `ends`: the time marks the
    end of a piece (received), else its start (sent)."""
    bins = np.zeros(round((stop - start) * 100))
    energy = np.zeros_like(bins)
    for t, samples, rate in pieces:
        begin = t - len(samples) / rate if ends else t
        index = ((begin - start) * 100 + np.arange(len(samples)) * 100 / rate).astype(int)
        ok = (index >= 0) & (index < len(bins))
        np.add.at(energy, index[ok], samples[ok] ** 2)
        np.add.at(bins, index[ok], 1)
    return np.sqrt(energy / np.maximum(bins, 1))
