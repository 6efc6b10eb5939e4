"""The server's HTTP surface: routes, limits, token, admission, bad input, clean-up (loopback only)."""

from __future__ import annotations

import asyncio
import gc
import io
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import aiohttp
import av
import msgpack
import numpy as np
import pytest
import torch
from aiortc import RTCPeerConnection
from PIL import Image

from engine.exceptions import EngineError
from engine.parts import Parts
from engine.streaming.session import SessionOptions, fitted_frame
from tests.factories import micro_config
from tests.transport.helpers import connect, free_port, running_server
from transport import ice, messages
from transport.limits import RateLimit
from transport.registry import MESSAGE_BURST, MESSAGES_PER_S
from transport.server import MAX_JSON_BYTES, ServerSettings, check_settings
from transport.tracks import MicrophoneIngest

PHOTOS = Path(__file__).parents[1] / "fixtures" / "photos"


@pytest.fixture(scope="module")
def parts() -> Parts:
    return Parts.random(micro_config(), seed=5)


def _png(size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt)
    return buffer.getvalue()


async def _offer_sdp() -> str:
    pc = RTCPeerConnection(ice.configuration(()))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def test_routes_limits_and_bad_input(parts: Parts) -> None:
    async def main() -> None:
        async with running_server(parts) as (_, url), aiohttp.ClientSession() as http:

            async def call(method: str, path: str, **kw: object) -> tuple[int, object]:
                async with http.request(method, url + path, **kw) as r:
                    body = await (r.json() if r.content_type == "application/json" else r.read())
                    return r.status, body

            status, body = await call("GET", "/health")
            assert status == 200 and body["status"] == "ok" and body["sessions"] == 0
            status, page = await call("GET", "/")
            assert status == 200 and b"InfinityHuman Live" in page
            assert (await call("GET", "/client/app.js"))[0] == 200
            for path in ("/client/..%2fserver.py", "/client/secret.txt", "/nowhere"):
                assert (await call("GET", path))[0] == 404
            status, text = await call("GET", "/metrics")
            assert status == 200 and b"ihuman_sessions 0.0" in text
            # What a soak watches: memory (and the C heap's, glibc here), open files, threads, tasks.
            for series in (
                b"process_resident_memory_bytes",
                b"ihuman_heap_in_use_bytes",
                b"ihuman_heap_free_bytes",
                b"process_open_fds",
                b"ihuman_threads",
                b"ihuman_asyncio_tasks",
            ):
                assert series in text
            # Offers: content type, JSON, shape, size, SDP, role, session.
            sdp = await _offer_sdp()
            cases = [
                ({"data": "v=0", "headers": {"Content-Type": "text/plain"}}, 415, "application/json"),
                ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "not JSON"),
                ({"json": [1, 2]}, 400, "JSON object"),
                ({"json": {"type": "offer"}}, 400, "missing 'sdp'"),
                ({"json": {"type": "answer", "sdp": sdp}}, 400, "expected"),
                ({"json": {"type": "offer", "sdp": "x" * (MAX_JSON_BYTES + 10)}}, 413, "limit"),
                (
                    {"json": {"type": "offer", "sdp": "v=0\r\nthis is no session description"}},
                    400,
                    "SDP offer",
                ),
                ({"json": {"type": "offer", "sdp": sdp, "role": "admin"}}, 400, "role"),
                (
                    {"json": {"type": "offer", "sdp": sdp, "role": "viewer", "session": "nope"}},
                    404,
                    "no running",
                ),
                ({"json": {"type": "offer", "sdp": sdp, "avatar": "nope"}}, 404, "no avatar"),
                ({"json": {"type": "offer", "sdp": sdp, "text": 5}}, 400, "'text'"),
            ]
            for kw, want, message in cases:
                status, body = await call("POST", "/offer", **kw)
                assert (status, message in body["error"]) == (want, True), (kw, status, body)
            # Avatars: type, size, corrupt, bomb, format; then a good one.
            png = {"Content-Type": "image/png"}
            cases = [
                ({"data": b"abc", "headers": {"Content-Type": "text/plain"}}, 415, "image/png"),
                ({"data": b"\0" * (11 * 1024 * 1024), "headers": png}, 413, "limit"),
                ({"data": _png((64, 64))[:60], "headers": png}, 400, "corrupted"),
                ({"data": b"definitely not an image", "headers": png}, 400, "not an image format"),
                ({"data": _png((8000, 6000), "1"), "headers": png}, 400, "48,000,000 pixels"),
                ({"data": _png((32, 32), "P", "GIF"), "headers": {"Content-Type": "image/gif"}}, 415, "GIF"),
            ]
            for kw, want, message in cases:
                status, body = await call("POST", "/avatars", **kw)
                assert (status, message in body["error"]) == (want, True), (status, body)
            # A picture without a face is refused; a photo is framed by its face at twice the HR size.
            status, body = await call("POST", "/avatars", data=_png((96, 64)), headers=png)
            assert (status, "no face found" in body["error"]) == (422, True), (status, body)
            photo = (PHOTOS / "grace_hopper.jpg").read_bytes()
            status, body = await call("POST", "/avatars", data=photo, headers={"Content-Type": "image/jpeg"})
            hr = parts.config.hr
            assert status == 201 and (body["width"], body["height"]) == (2 * hr.width, 2 * hr.height)
            assert (await call("GET", "/avatars"))[1]["avatars"] == [{"id": body["id"], "demo": False}]
            status, thumbnail = await call("GET", f"/avatars/{body['id']}")
            assert status == 200 and thumbnail.startswith(b"\x89PNG")
            assert (await call("GET", "/avatars/nope"))[0] == 404
            assert (await call("GET", "/health"))[0] == 200  # still serving

    asyncio.run(main())


def test_token_guards_every_route(parts: Parts) -> None:
    with pytest.raises(EngineError, match="without --token"):
        check_settings(ServerSettings(host="0.0.0.0"))
    check_settings(ServerSettings(host="0.0.0.0", token="s3cret"))  # allowed with a token

    async def main() -> None:
        async with running_server(parts, token="s3cret") as (_, url), aiohttp.ClientSession() as http:
            for path in ("/", "/health", "/metrics", "/client/app.js", "/avatars"):
                for headers, params, want in [
                    ({}, {}, 401),
                    ({"Authorization": "Bearer wrong"}, {}, 401),
                    ({}, {"token": "s3cre"}, 401),
                    ({"Authorization": "Bearer s3cret"}, {}, 200),
                    ({}, {"token": "s3cret"}, 200),
                ]:
                    async with http.get(url + path, headers=headers, params=params) as r:
                        assert r.status == want, (path, headers, params)
            async with http.post(url + "/offer", json={}) as r:
                assert r.status == 401

    asyncio.run(main())


def test_a_bucket_allows_a_burst_then_a_rate() -> None:
    now = [0.0]
    limit = RateLimit(rate=2.0, burst=3, max_clients=2, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b")  # another client has its own bucket
    now[0] = 0.5  # one token back for "a"
    assert limit.allow("a") and not limit.allow("a")
    limit.allow("c")  # a third client: the stalest bucket ("b") is forgotten
    assert len(limit._buckets) == 2 and "b" not in limit._buckets
    assert limit.refused == 2 and limit.retry_after() == 1


def test_request_floods_are_limited_per_address(parts: Parts) -> None:
    async def main() -> None:
        limits = {"request_burst": 4, "requests_per_s": 0.5}
        async with running_server(parts, **limits) as (_, url), aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(6):
                async with http.post(url + "/offer", json={}) as r:
                    statuses.append(r.status)
                    retry = r.headers.get("Retry-After")
            async with http.get(url + "/health") as r:
                health = r.status
        assert statuses == [400] * 4 + [429] * 2 and retry == "2" and health == 200

    asyncio.run(main())


def test_pages_of_other_sites_cannot_drive_the_server(parts: Parts) -> None:
    """DNS rebinding shows as a foreign Host (421); a cross-site page's changes as a foreign
    Origin (403). The page itself, programs (no Origin) and --public-host names pass."""
    png = {"Content-Type": "image/png"}

    async def main() -> None:
        async with running_server(parts, public_hosts=("avatar.example",)) as (_, url):
            port = url.rsplit(":", 1)[1]
            async with aiohttp.ClientSession() as http:
                for host, want in [
                    (f"127.0.0.1:{port}", 200),
                    (f"localhost:{port}", 200),
                    (f"[::1]:{port}", 200),
                    (f"avatar.example:{port}", 200),
                    (f"rebound.attacker.example:{port}", 421),
                    ("127.0.0.1.attacker.example", 421),
                ]:
                    async with http.get(url + "/health", headers={"Host": host}) as r:
                        assert r.status == want, host
                        if want == 421:
                            assert "--public-host" in (await r.json())["error"]
                for origin, allowed in [
                    (None, True),
                    (f"http://127.0.0.1:{port}", True),
                    (f"http://localhost:{port}", True),
                    ("https://avatar.example", True),
                    ("https://attacker.example", False),
                    ("null", False),  # a sandboxed frame
                ]:
                    headers = png if origin is None else {**png, "Origin": origin}
                    async with http.post(url + "/avatars", data=_png((96, 64)), headers=headers) as r:
                        # Allowed, the faceless picture reaches the face check (422).
                        assert r.status == (422 if allowed else 403), (origin, r.status)
                async with http.post(
                    url + "/offer", json={}, headers={"Origin": "https://attacker.example"}
                ) as r:
                    assert r.status == 403
                async with http.get(url + "/health", headers={"Origin": "https://attacker.example"}) as r:
                    assert r.status == 200  # reading is not changing

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.realtime
def test_admission_control_bad_messages_and_abandoned_offers(parts: Parts) -> None:
    async def main() -> None:
        async with running_server(parts, max_sessions=1, connect_timeout_s=1.5, max_viewers=1) as (
            server,
            url,
        ):
            first = await connect(url, session=None, role="talker")  # a talker that sends no audio
            with pytest.raises(RuntimeError, match=r"503.*in use"):
                await connect(url, role="talker")
            assert server.sessions.rejected_total == 1
            for _ in range(50):
                if first.messages:
                    break
                await asyncio.sleep(0.05)
            # Malformed data-channel messages get an error back; the session carries on.
            channel = first.channel  # type: ignore[attr-defined]
            for bad in (b"\xc1", msgpack.packb([1]), msgpack.packb({"v": 9, "type": "mute"})):
                channel.send(bad)
            channel.send(messages.encode("set_text", text="x" * 600))
            channel.send(messages.encode("mute", muted="yes"))
            channel.send(messages.encode("interrupt"))
            await asyncio.sleep(0.5)
            errors = [m["message"] for m in first.messages if m["type"] == "error"]
            assert len(errors) == 5, errors
            assert server.sessions.sessions[first.session].session.generation == 1  # interrupt worked
            # A flood of commands is cut at the per-peer burst, with one error back; the session runs on.
            flood = time.monotonic()
            for _ in range(200):
                channel.send(messages.encode("interrupt"))
            await asyncio.sleep(0.5)
            generation = server.sessions.sessions[first.session].session.generation
            # The burst, and at most what the rate refilled while they arrived.
            refilled = MESSAGES_PER_S * (time.monotonic() - flood)
            assert MESSAGE_BURST - 6 <= generation - 1 <= MESSAGE_BURST + refilled + 1 < 100
            assert [m for m in first.messages if m.get("message", "").startswith("too many messages")]
            # Viewers per session are bounded (max_viewers=1 here).
            viewer = await connect(url, session=first.session)
            with pytest.raises(RuntimeError, match=r"503.*viewers"):
                await connect(url, session=first.session)
            await viewer.close()
            await first.close()
            for _ in range(50):
                if not server.sessions.sessions:
                    break
                await asyncio.sleep(0.1)
            assert not server.sessions.sessions
            # An offer whose client vanishes before connecting is dropped after the timeout.
            pc = RTCPeerConnection(ice.configuration(()))
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with aiohttp.ClientSession() as http:
                body = {"type": "offer", "sdp": pc.localDescription.sdp}
                async with http.post(url + "/offer", json=body) as r:
                    assert r.status == 200
            await pc.close()
            assert len(server.sessions.sessions) == 1
            await asyncio.sleep(2.5)
            assert not server.sessions.sessions

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.realtime
def test_connect_disconnect_cycles_leak_nothing(parts: Parts) -> None:
    threads_before = set(threading.enumerate())

    async def cycle(url: str) -> None:
        client = await connect(url, role="talker")
        client.keep_images = False
        for _ in range(100):
            if client.frames:
                break
            await asyncio.sleep(0.02)
        assert client.frames
        await client.close()

    async def main() -> list[int]:
        sizes = []
        options = SessionOptions(target_delay_ms=500)
        async with running_server(parts, session_options=options) as (server, url):
            baseline_tasks = len(asyncio.all_tasks())
            for i in range(14):
                await cycle(url)
                if i in (3, 13):
                    for _ in range(50):
                        if not server.sessions.sessions:
                            break
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.3)
                    gc.collect()
                    sizes.append(tracemalloc.get_traced_memory()[0])
                    assert not server.sessions.sessions and not server.sessions.engine.sessions
                    assert len(asyncio.all_tasks()) <= baseline_tasks + 2, asyncio.all_tasks()
        return sizes

    tracemalloc.start()
    try:
        sizes = asyncio.run(main())
    finally:
        tracemalloc.stop()
    # 10 more sessions, no more memory (a 1280x720 frame kept per session would be 2.7 MB each)
    assert sizes[1] - sizes[0] < 2_000_000, sizes
    lingering = [
        t for t in set(threading.enumerate()) - threads_before if t.is_alive() and "session" in t.name
    ]
    assert not lingering


def test_demo_avatars_are_offered_and_are_the_default(parts: Parts, tmp_path: Path) -> None:
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        Image.new("RGB", (128, 64), colour).save(tmp_path / f"demo-{i + 1}.png")

    async def main() -> None:
        async with (
            running_server(parts, avatar_dir=tmp_path) as (server, url),
            aiohttp.ClientSession() as http,
        ):
            async with http.get(url + "/avatars") as r:
                assert (await r.json())["avatars"] == [
                    {"id": "demo-1", "demo": True},
                    {"id": "demo-2", "demo": True},
                ]
            client = await connect(url, role="talker")  # picks no avatar
            live = server.sessions.sessions[client.session]
            expected = fitted_frame(server.avatars.get("demo-1").image, *live.session.frame_size)
            assert np.array_equal(live.session.reference_frame, expected)
            await client.close()

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.realtime
def test_a_session_whose_stage_fails_is_told_and_ended(tmp_path: Path) -> None:
    parts = Parts.random(micro_config(), seed=5)
    wav = tmp_path / "talk.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Talking while the refiner breaks down."], check=True)

    async def main() -> None:
        async with running_server(parts) as (server, url):
            client = await connect(url, wav)
            for _ in range(100):  # streaming: the first stats arrived
                if any(m["type"] == "stats" for m in client.messages):
                    break
                await asyncio.sleep(0.1)
            with torch.no_grad():
                next(parts.refiner.parameters()).fill_(float("nan"))  # its next segment fails
            for _ in range(100):
                if not server.sessions.sessions:
                    break
                await asyncio.sleep(0.1)
            assert not server.sessions.sessions and server.sessions.failed_total == 1
            errors = [m["message"] for m in client.messages if m["type"] == "error"]
            assert errors and "the avatar session stopped" in errors[0] and "non-finite" in errors[0]
            await client.close()

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.realtime
def test_a_session_whose_microphone_cannot_be_read_is_told_and_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's reading of one talker's microphone raises mid-call: that session is told why
    and ended (it had gone on silent and idle, saying nothing); the other session runs on."""
    parts = Parts.random(micro_config(), seed=5)
    wav = tmp_path / "talk.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Talking while one microphone breaks."], check=True)
    breaking, broken = threading.Event(), []
    convert = MicrophoneIngest.convert

    def failing_convert(self: MicrophoneIngest, frame: av.AudioFrame) -> np.ndarray:
        if breaking.is_set() and (not broken or broken[0] is self):
            broken[:1] = [self]  # the first microphone read after the break, and only it
            raise ValueError("the microphone's audio cannot be resampled")
        return convert(self, frame)

    monkeypatch.setattr(MicrophoneIngest, "convert", failing_convert)

    async def main() -> None:
        async with running_server(parts) as (server, url):
            clients = [await connect(url, wav), await connect(url, wav)]
            for _ in range(150):  # both streaming: their first stats arrived
                if all(any(m["type"] == "stats" for m in c.messages) for c in clients):
                    break
                await asyncio.sleep(0.1)
            breaking.set()
            for _ in range(100):
                if len(server.sessions.sessions) < 2:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # time for the other one to go wrong too, if it would
            assert server.sessions.failed_total == 1 and len(server.sessions.sessions) == 1
            ended, running = sorted(clients, key=lambda c: c.session in server.sessions.sessions)
            errors = [m["message"] for m in ended.messages if m["type"] == "error"]
            assert errors and "the avatar session stopped: its microphone failed" in errors[0]
            assert "cannot be resampled" in errors[0]
            assert not any(m["type"] == "error" for m in running.messages)
            for client in clients:
                await client.close()

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.realtime
def test_sigterm_drains_the_server(tmp_path: Path) -> None:
    """`ihuman serve` stopped by SIGTERM: the talker is told, its recording completes, the process
    exits 0 within 5 s."""
    port, wav = free_port(), tmp_path / "talk.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Keep talking while the server stops."], check=True)
    command = ["serve", "--random-weights", "--port", str(port), "--output", str(tmp_path / "rec.mkv")]
    process = subprocess.Popen([sys.executable, "-m", "ihuman", *command], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert "open http://127.0.0.1" in process.stdout.readline()

    async def main() -> tuple[float, list[dict]]:
        client = await connect(f"http://127.0.0.1:{port}", wav)
        for _ in range(150):
            if any(m["type"] == "stats" for m in client.messages):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        while process.poll() is None and time.monotonic() - started < 10:
            await asyncio.sleep(0.05)
        await client.close()
        return time.monotonic() - started, client.messages

    took, received = asyncio.run(main())
    assert process.wait(timeout=5) == 0 and took < 5.0
    assert any(m["type"] == "error" and m["message"] == "the server is stopping" for m in received)
    recordings = list(tmp_path.glob("rec-*.mkv"))
    assert len(recordings) == 1 and not list(tmp_path.glob("*.partial"))
    with av.open(str(recordings[0])) as c:
        assert sum(1 for _ in c.decode(video=0)) > 10
