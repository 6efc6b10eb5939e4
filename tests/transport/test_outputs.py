"""Outputs: a stalled or vanished receiver never holds the session up, recordings are whole or
absent, streams are read back by real receivers on loopback (ffmpeg for SRT)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.parts import Parts
from tests.factories import micro_config
from tests.transport.helpers import connect, free_port, running_server
from transport.outputs import OutputError, OutputRunner, StreamFormat, output_sink, session_url
from transport.outputs.encoded import FileSink
from transport.outputs.sink import Sink, pcm16, planes_from_rgb
from transport.outputs.vcam import VirtualCameraSink

FMT = StreamFormat(320, 176)  # small frames: the tests are about delivery, not size


def _picture(i: int) -> np.ndarray:
    return planes_from_rgb(np.full((176, 320, 3), (i * 7) % 256, np.uint8), FMT.width, FMT.height)


def _feed(runner: OutputRunner, frames: int, first: int = 0, pace: bool = False) -> None:
    """Frames `first`... and their voice; pace: at the real rate, as a session delivers them."""
    voice = pcm16(0.1 * np.sin(np.arange(FMT.samples_per_frame) / 5))
    for i in range(first, first + frames):
        runner.put_video(_picture(i), i)
        runner.put_audio(voice, i * FMT.samples_per_frame)
        if pace:
            time.sleep(1 / FMT.fps)


class ScriptedSink(Sink):
    """A receiver that fails to open `refusals` times, loses its connection once after
    `drop_after` writes, and can be stalled."""

    def __init__(self, refusals: int = 0, drop_after: int | None = None) -> None:
        super().__init__("scripted://", FMT)
        self.refusals, self.drop_after = refusals, drop_after
        self.opens, self.written = 0, 0
        self.flowing = threading.Event()
        self.flowing.set()

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.refusals:
            raise OutputError("receiver not there yet")

    def write_video(self, planes: np.ndarray, index: int) -> None:
        self.flowing.wait()
        self.written += 1
        if self.drop_after is not None and self.written == self.drop_after:
            raise BrokenPipeError("receiver went away")

    def write_audio(self, pcm: np.ndarray, index: int) -> None:
        self.written += 1

    def close(self, complete: bool = True) -> None:
        pass


def test_a_stalled_receiver_loses_frames_not_the_session() -> None:
    sink = ScriptedSink()
    sink.flowing.clear()  # the receiver stops reading
    runner = OutputRunner(sink, queue_items=10).start()
    started = time.monotonic()
    _feed(runner, 50)  # 100 items into a queue of 10
    assert time.monotonic() - started < 2.0  # handing over never waited for the receiver
    stats = runner.stats()
    assert sum(stats["dropped"].values()) >= 100 - 10 - 1  # type: ignore[union-attr]
    sink.flowing.set()
    assert runner.stop()
    assert runner.stats()["state"] == "closed"


@pytest.mark.realtime
def test_a_receiver_that_comes_late_or_goes_away_is_reconnected() -> None:
    sink = ScriptedSink(refusals=1, drop_after=5)
    runner = OutputRunner(sink).start()
    _feed(runner, 40, pace=True)  # 1.6 s: past the first backoff (0.5 s)
    stats = runner.stats()
    assert runner.stop()
    assert sink.opens == 3 and stats["reconnects"] == 1  # refused once, dropped once
    assert stats["sent"]["video"] > 10 and stats["error"] == "receiver went away"  # type: ignore[index]


def test_a_recording_is_whole_or_absent(tmp_path: Path) -> None:
    path = tmp_path / "talk.mkv"
    runner = OutputRunner(output_sink(str(path), FMT), retry=False).start()
    _feed(runner, 25)
    assert runner.stop() and runner.stats()["state"] == "closed"
    assert path.is_file() and not list(tmp_path.glob("*.partial"))
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 320, 176)
        assert len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 25
    broken = FileSink(str(tmp_path / "broken.mp4"), FMT)
    broken.open()
    broken.write_video(_picture(0), 0)
    broken.close(complete=False)  # a failed recording leaves nothing behind
    assert not list(tmp_path.glob("broken*"))


def test_output_urls_are_checked(tmp_path: Path) -> None:
    for url, message in {
        "ndi://studio": "unknown output",
        "udp://127.0.0.1": "give a host and a port",
        "talk.avi": "unknown output",
        str(tmp_path / "no" / "talk.mp4"): "does not exist",
    }.items():
        with pytest.raises(OutputError, match=message):
            output_sink(url, FMT)
    # A server session's recording carries its id; streams are shared as they are.
    assert session_url(str(tmp_path / "talk.mp4"), "abc") == str(tmp_path / "talk-abc.mp4")
    assert session_url("udp://127.0.0.1:5000", "abc") == "udp://127.0.0.1:5000"


def test_no_virtual_camera_says_how_to_make_one() -> None:
    sink = VirtualCameraSink("vcam:/dev/video99", FMT)
    with pytest.raises(OutputError, match="modprobe v4l2loopback"):
        sink.open()
    assert not sink.takes_audio


def _wait_bound(port: int, kind: socket.SocketKind, timeout: float = 20.0) -> None:
    """Until something listens on `port` of loopback (binding it then fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


# (our URL, ffmpeg's listening input, its transport): real receivers on loopback.
RECEIVERS = {
    "tcp": (
        "tcp://127.0.0.1:{port}",
        ["-f", "mpegts", "-i", "tcp://127.0.0.1:{port}?listen=1"],
        socket.SOCK_STREAM,
    ),
    "srt": ("srt://127.0.0.1:{port}", ["-i", "srt://127.0.0.1:{port}?mode=listener"], socket.SOCK_DGRAM),
    "rtmp": (
        "rtmp://127.0.0.1:{port}/live/avatar",
        ["-listen", "1", "-i", "rtmp://127.0.0.1:{port}/live/avatar"],
        socket.SOCK_STREAM,
    ),
    "rtsp": (
        "rtsp://127.0.0.1:{port}/avatar",
        ["-rtsp_flags", "listen", "-i", "rtsp://127.0.0.1:{port}/avatar"],
        socket.SOCK_STREAM,
    ),
}


@pytest.mark.slow
@pytest.mark.realtime
def test_streams_reach_listening_receivers(tmp_path: Path) -> None:
    """ffmpeg listens as a TCP player, an SRT peer, an RTMP server and an RTSP server would (all at
    once, one session's frames to each); what each receives is H.264 and AAC, nearly every frame."""
    listeners, outputs = [], []
    try:
        for scheme, (url, listen, kind) in RECEIVERS.items():
            port = free_port()
            receive = [a.format(port=port) for a in listen] + [
                "-c",
                "copy",
                "-f",
                "mpegts",
                f"{tmp_path}/{scheme}.ts",
            ]
            command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *receive]
            listeners.append(subprocess.Popen(command))
            _wait_bound(port, kind)
            outputs.append(OutputRunner(output_sink(url.format(port=port), FMT)).start())
        voice = pcm16(0.1 * np.sin(np.arange(FMT.samples_per_frame) / 5))
        for i in range(100):  # 4 s at the real rate, as a session delivers
            for runner in outputs:
                runner.put_video(_picture(i), i)
                runner.put_audio(voice, i * FMT.samples_per_frame)
            time.sleep(1 / FMT.fps)
        for runner in outputs:
            assert runner.stop(timeout=10) and runner.stats()["state"] == "closed", runner.stats()
        for listener in listeners:
            listener.wait(timeout=15)
    finally:
        for listener in listeners:
            listener.kill()
    for scheme in RECEIVERS:
        with av.open(f"{tmp_path}/{scheme}.ts") as c:
            assert c.streams.video[0].codec_context.name == "h264" and len(c.streams.audio) == 1, scheme
            assert sum(1 for _ in c.decode(video=0)) >= 75, scheme


@pytest.mark.slow
@pytest.mark.realtime
def test_a_served_talker_session_is_also_recorded(tmp_path: Path) -> None:
    """`ihuman serve --output FILE`: the talker's session goes to the peers and to a recording of
    its own (the session id in its name), reported in /metrics while it runs."""

    def streaming(metrics: str) -> list[tuple[dict[str, str], float]]:
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "ihuman_output_streaming"
        ]

    async def talk() -> tuple[str, list]:
        parts = Parts.random(micro_config(), seed=5)
        wav = tmp_path / "talk.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "Recording the avatar for a while."], check=True)
        record = str(tmp_path / "session.mkv")
        async with running_server(parts, outputs=(record,), video_size=(640, 360)) as (_, url):
            client = await connect(url, wav)
            seen: list = []
            async with aiohttp.ClientSession() as http:
                for _ in range(60):  # until the recording has taken frames, or 30 s
                    await asyncio.sleep(0.5)
                    async with http.get(f"{url}/metrics") as response:
                        seen = streaming(await response.text())
                    if seen and seen[0][1] == 1.0:
                        break
            await asyncio.sleep(2)
            await client.close()
            for _ in range(100):  # the session ends when its talker leaves
                if (tmp_path / f"session-{client.session}.mkv").exists():
                    break
                await asyncio.sleep(0.1)
        return client.session, seen

    session, seen = asyncio.run(talk())
    assert seen == [({"session": session, "output": f"{tmp_path}/session-{session}.mkv"}, 1.0)]
    with av.open(str(tmp_path / f"session-{session}.mkv")) as c:
        video = c.streams.video[0]
        assert (video.width, video.height) == (640, 360) and len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) >= 25
