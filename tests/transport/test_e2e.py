"""End to end over real WebRTC on loopback: an aiortc talker and a viewer against the server.

The engine runs the micro-size parts (real models, milliseconds per segment):
these tests are about the transport; the engine's own speed is measured by
`ihuman bench latency`.
"""

from __future__ import annotations

import asyncio
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.parts import Parts
from engine.streaming.session import SessionOptions
from tests.factories import micro_config
from tests.transport.helpers import connect, envelope, running_server

pytestmark = [pytest.mark.slow, pytest.mark.realtime]  # make test-fast leaves it out

TRANSPORT_MAX_MS = 350  # the most the WebRTC path may add to D, both ways (see the audio check)


@pytest.fixture(scope="module")
def parts() -> Parts:
    """Random parts with a quiet picture: fresh generators stream the reference still, but a random
    autoencoder decodes it with full contrast, and its random temporal unfold makes the 4 frames of
    a latent flicker; two video encoders do not reproduce those alike. A small latent scale keeps
    the picture faint, and a zero unfold conv (its shortcut repeats the features) keeps the 4
    frames of a latent alike."""
    parts = Parts.random(micro_config(), seed=4)
    parts.vae.latent_std.fill_(0.01)
    torch.nn.init.zeros_(parts.vae.decoder.unfold.weight)
    torch.nn.init.zeros_(parts.vae.decoder.unfold.bias)
    return parts


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """espeak-ng phrases with pauses of unequal length: speech alone has a syllable rhythm that
    gives its envelope's cross-correlation side peaks ~200 ms apart; the pauses make it unique."""
    folder = tmp_path_factory.mktemp("speech")
    pieces, rate = [], 22_050
    phrases = ["Hello, I am your avatar.", "Let us test the live server now.", "One, two, three.", "Goodbye."]
    for i, (text, pause) in enumerate(zip(phrases, (0.37, 0.81, 0.23, 0.55), strict=True)):
        subprocess.run(["espeak-ng", "-w", str(folder / f"{i}.wav"), text], check=True)
        with wave.open(str(folder / f"{i}.wav")) as w:
            rate = w.getframerate()
            pieces += [
                np.frombuffer(w.readframes(w.getnframes()), "<i2"),
                np.zeros(round(pause * rate), "<i2"),
            ]
    path = folder / "talk.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate(pieces).tobytes())
    return path


def test_talker_and_viewer_over_webrtc(parts: Parts, speech: Path) -> None:
    async def main() -> tuple:
        options = SessionOptions(target_delay_ms=600)
        async with running_server(parts, session_options=options) as (server, url):
            talker = await connect(url, speech)
            await asyncio.sleep(6.5)
            heard = list(talker.audio)  # the audio check uses the talker-only part of the call
            viewer = await connect(url, session=talker.session)
            await asyncio.sleep(3.0)
            live = server.sessions.sessions[talker.session]
            roles = sorted(p.role for p in live.peers)
            await viewer.close()
            await talker.close()
            for _ in range(50):  # the server notices the talker left and ends the session
                if not server.sessions.sessions:
                    break
                await asyncio.sleep(0.1)
            return talker, viewer, heard, roles, dict(server.sessions.sessions)

    talker, viewer, heard, roles, left = asyncio.run(main())
    assert roles == ["talker", "viewer"] and not left
    # Video: 1280x720 at 25 fps, more than 5 s of it.
    times = np.array([t for t, _, _ in talker.frames])
    assert {img.shape for _, _, img in talker.frames} == {(720, 1280)}
    last5 = times[times >= times[-1] - 5.0]
    assert times[-1] - times[0] >= 5.0 and (len(last5) - 1) / (last5[-1] - last5[0]) >= 20
    # Stats arrive once a second on the data channel.
    stats = [m for m in talker.messages if m["type"] == "stats"]
    assert talker.messages[0]["type"] == "hello" and len(stats) >= 5
    assert stats[-1]["delay_ms"] == 600 and stats[-1]["fps"] > 20 and stats[-1]["frames"] > 100
    # The returned audio is the sent audio, D later plus the transport's own delay, both ways: Opus,
    # aiortc's audio jitter buffers, resampling (+30 to +290 ms, measured on our 2-core machines;
    # the session itself adds exactly D, checked to the sample in tests/engine/streaming).
    sent = talker.microphone.sent
    received = [(t, samples, 48_000) for t, samples in heard]
    start, stop = sent[0][0] - 1, received[-1][0] + 1
    a, b = envelope(sent, start, stop, ends=False), envelope(received, start, stop, ends=True)
    lags = np.arange(0, 200)  # 10 ms steps
    corr = [np.corrcoef(a[: len(a) - lag], b[lag:])[0, 1] for lag in lags]
    best = int(np.argmax(corr))
    assert corr[best] > 0.6, corr[best]
    assert 600 <= best * 10 <= 600 + TRANSPORT_MAX_MS, best * 10
    # The viewer gets the same frames (same pictures up to the two encoders' losses). aiortc's
    # receiver counts pts from the first frame it received, so the viewer's count starts when it
    # joined: its offset to the talker's is found from the pictures (at 1/16 size), then the frames
    # are compared whole.
    mine = {pts: img for _, pts, img in talker.frames}
    theirs = {pts: img for _, pts, img in viewer.frames}

    def small(img: np.ndarray) -> np.ndarray:
        return img.reshape(45, 16, 80, 16).mean((1, 3))

    mine_small, theirs_small = ({p: small(img) for p, img in d.items()} for d in (mine, theirs))

    def difference(offset: int) -> float:
        pairs = [(mine_small[p + offset], img) for p, img in theirs_small.items() if p + offset in mine_small]
        return float(np.median([np.abs(x - y).mean() for x, y in pairs])) if len(pairs) > 50 else np.inf

    offset = min(range(0, max(mine) + 1, 90_000 // 25), key=difference)
    shared = [(mine[p + offset], img) for p, img in theirs.items() if p + offset in mine]
    assert len(shared) > 50
    # The median: a pair may differ while one encoder recovers from loss (a keyframe after a
    # picture-loss request, its rate control ramping up on a busy machine); most must not.
    same = np.median([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in shared])
    assert same < 4.0, same
