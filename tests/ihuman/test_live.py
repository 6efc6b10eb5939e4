"""`ihuman live`: a headless session to outputs, read back as a player would (loopback only)."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from engine.data.speech import resample
from ihuman.cli import main
from transport.stamps import find_marks, mark_burst, read_code

PHOTO = Path(__file__).parents[1] / "fixtures" / "photos" / "grace_hopper.jpg"
RATE = 16_000
MARK_AT_S = 2.0  # the tone mark's onset in the input


def _marked_speech(path: Path) -> Path:
    """4 s of espeak-ng speech with a tone mark laid over it at MARK_AT_S."""
    spoken = path.with_name("spoken.wav")
    subprocess.run(
        ["espeak-ng", "-w", str(spoken), "Hello, I am your avatar. Let us go live now."], check=True
    )
    with wave.open(str(spoken)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        speech = resample(pcm, w.getframerate(), RATE)
    audio = np.zeros(round(4.0 * RATE), np.float32)
    audio[: min(len(audio), len(speech))] = 0.3 * speech[: len(audio)]
    burst = mark_burst(RATE)
    start = round(MARK_AT_S * RATE)
    audio[start : start + len(burst)] = burst
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((audio * 32767).astype(np.int16).tobytes())
    return path


class Receiver(threading.Thread):
    """A player on loopback: takes the MPEG-TS datagrams sent to its port until the sender has
    finished and the port has been quiet for a moment, then demuxes and decodes them with FFmpeg
    as a player would. (FFmpeg's own udp:// reader can only end on a timeout, which must also
    cover the sender's start-up: seconds of waiting after every stream.)"""

    QUIET_S = 0.5  # after the sender has finished: loopback delivers within milliseconds

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.url = f"udp://127.0.0.1:{self.socket.getsockname()[1]}"
        self.sender_done = threading.Event()
        self.streams: list[tuple[str, str, object]] = []
        self.video: list[tuple[float, np.ndarray]] = []  # (stream time, luma)
        self.audio: list[tuple[float, np.ndarray]] = []  # (stream time, mono samples)
        self.audio_rate = 0
        self.error: Exception | None = None

    def finish(self, timeout: float = 30.0) -> None:
        """The sender has finished: read what is still arriving, then decode."""
        self.sender_done.set()
        self.join(timeout)

    def run(self) -> None:
        stream = bytearray()
        last = time.monotonic()
        with self.socket:
            while not (self.sender_done.is_set() and time.monotonic() - last > self.QUIET_S):
                try:
                    stream += self.socket.recv(65_536)
                    last = time.monotonic()
                except TimeoutError:
                    continue
        try:
            with av.open(io.BytesIO(bytes(stream)), format="mpegts") as c:
                for s in c.streams:
                    if s.type == "audio":
                        self.audio_rate = s.codec_context.sample_rate
                        detail: object = self.audio_rate
                    else:
                        detail = (s.codec_context.width, s.codec_context.height, s.average_rate)
                    self.streams.append((s.type, s.codec_context.name, detail))
                for frame in c.decode(*c.streams):
                    if isinstance(frame, av.VideoFrame):
                        self.video.append((float(frame.time), frame.to_ndarray(format="gray")))
                    else:
                        self.audio.append((float(frame.time), frame.to_ndarray().mean(0)))
        except Exception as err:
            self.error = err


@pytest.mark.slow
@pytest.mark.realtime
def test_live_to_udp_as_written(tmp_path: Path) -> None:
    """`ihuman live --image X --audio WAV --output udp://127.0.0.1:PORT`: H.264 1280x720 at 25 fps
    with an audio stream, read back by a player."""
    wav = _marked_speech(tmp_path / "talk.wav")
    receiver = Receiver()
    receiver.start()
    command = f"live --image {PHOTO} --audio {wav} --output {receiver.url}"
    run = subprocess.run(
        [sys.executable, "-m", "ihuman", *command.split()],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    receiver.finish()
    assert receiver.error is None, receiver.error
    assert ("video", "h264", (1280, 720, 25)) in receiver.streams
    assert any(kind == "audio" for kind, _, _ in receiver.streams)
    assert len(receiver.video) >= 90  # 4 s of voice and the session's delay, at 25 fps
    assert "fps" in run.stderr and "udp://127.0.0.1" in run.stdout  # the status line and the summary


@pytest.mark.slow
@pytest.mark.realtime
def test_picture_and_voice_leave_in_sync(tmp_path: Path) -> None:
    """The frame shown when the mark sounds in the received stream is the frame made for that
    moment (its number read from the frame code), within one frame."""
    wav = _marked_speech(tmp_path / "talk.wav")
    receiver = Receiver()
    receiver.start()
    argv = ["live", "--random-weights", "--image", str(PHOTO), "--audio", str(wav)]
    assert main([*argv, "--output", receiver.url, "--bench-stamps"]) == 0
    receiver.finish()
    assert receiver.error is None, receiver.error
    samples = np.concatenate([a for _, a in receiver.audio])
    marks = find_marks(samples, receiver.audio_rate)
    assert len(marks) == 1, marks
    # The onset's time from the decoded frame that holds it (a datagram lost before it would
    # shift a count of samples from the start).
    ends = np.cumsum([len(a) for _, a in receiver.audio])
    holder = int(np.searchsorted(ends, marks[0][0], side="right"))
    first = ends[holder] - len(receiver.audio[holder][1])
    heard_at = receiver.audio[holder][0] + (marks[0][0] - first) / receiver.audio_rate
    shown = [(t, luma) for t, luma in receiver.video if t <= heard_at + 1e-6][-1]
    stamp = read_code(shown[1])
    assert stamp is not None
    assert abs(stamp.frame - MARK_AT_S * 25) <= 1, (stamp.frame, heard_at - shown[0])


def test_live_refuses_what_it_cannot_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    base = ["live", "--image", str(PHOTO), "--audio", str(wav)]
    cases = {
        "ftp://example/x": "unknown output 'ftp://example/x'",
        "udp://127.0.0.1": "give a host and a port",
        str(tmp_path / "missing" / "x.mp4"): "does not exist",
        str(tmp_path): "is a folder",
        str(tmp_path / "x.avi"): "unknown output",
    }
    for url, message in cases.items():
        assert main([*base, "--output", url]) == 2
        assert message in capsys.readouterr().err, url
    assert main(["live", "--image", str(PHOTO), "--output", "udp://127.0.0.1:9"]) == 2
    assert "--audio FILE" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realtime
def test_ctrl_c_ends_the_session_with_the_recording_complete(tmp_path: Path) -> None:
    wav = _marked_speech(tmp_path / "talk.wav")
    record = tmp_path / "live.mkv"
    command = [
        "live",
        "--random-weights",
        "--image",
        str(PHOTO),
        "--audio",
        str(wav),
        "--output",
        str(record),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "ihuman", *command], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:  # the status line: the session is streaming
        if " fps " in line and "streaming" in line:
            break
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "closed" in out and record.is_file() and not list(tmp_path.glob("*.partial"))
    with av.open(str(record)) as c:
        assert sum(1 for _ in c.decode(video=0)) > 0


def test_a_missing_microphone_stack_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if not installed
    assert main(["live", "--list-mics"]) == 2
    assert "pip install 'infinityhuman[live]'" in capsys.readouterr().err
