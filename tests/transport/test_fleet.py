"""`ihuman serve --ray`: a fleet of two workers on a local Ray, over real WebRTC on loopback.

The workers are real Ray actors (separate processes) holding micro-size engines; the front is the
server's HTTP side in this process; the clients are aiortc peers whose media go to the workers
directly. One scenario, in the order a fleet lives it: placement, admission, viewers, metrics, a
worker killed, its restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import torch
from PIL import Image

from engine.checkpoint import save_bundle
from engine.data.clip import make_clip
from engine.parts import REQUIRED, Parts
from engine.streaming.session import SessionOptions
from ihuman.cli import main
from ihuman.commands.serve import LOOPBACK_RAY
from tests.factories import micro_config
from tests.transport.helpers import LOOPBACK, Client, connect, free_port, listening

pytestmark = pytest.mark.slow  # make test-fast leaves it out

os.environ.setdefault(LOOPBACK_RAY, "0")  # the test's Ray listens on 127.0.0.1 only
ray = pytest.importorskip("ray")  # installed by `make test` (the dev extra includes `scale`)

from transport.avatars import AvatarStore  # noqa: E402
from transport.fleet.front import Fleet, FleetSettings  # noqa: E402
from transport.fleet.worker import WorkerSpec  # noqa: E402
from transport.server import Server, ServerSettings  # noqa: E402

WAIT_S = 90.0  # two workers, four peers and the Ray daemons share two cores


@pytest.fixture(scope="module")
def local_ray() -> object:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Micro-size parts on disk: each worker loads them itself, as it would a real bundle."""
    parts = Parts.random(micro_config(), seed=2)
    folder = tmp_path_factory.mktemp("fleet") / "bundle"
    return save_bundle(folder, parts.config, {name: getattr(parts, name) for name in REQUIRED})


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "talk.wav"
    text = "Hello, I am one of many avatars. Each of us runs on a worker of the fleet."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path


@contextlib.asynccontextmanager
async def running_fleet(bundle: Path, fleet: FleetSettings) -> AsyncIterator[tuple[Fleet, str]]:
    port = free_port()
    settings = ServerSettings(
        port=port,
        ice_addresses=LOOPBACK,
        max_sessions=fleet.sessions_per_worker,
        session_options=SessionOptions(target_delay_ms=900),
        request_burst=1000,
    )
    config = micro_config()
    picture = make_clip(5, 0.04, config.hr.width, config.hr.height).frames[0]
    spec = WorkerSpec(
        load_parts=functools.partial(Parts.from_bundle, bundle), settings=settings, default_avatar=picture
    )
    avatars = AvatarStore(frame=None)
    hosts = Fleet(spec, avatars, fleet)
    server = Server(settings, avatars, hosts)
    await hosts.warm_up()
    async with listening(server, port) as url:
        try:
            yield hosts, url
        finally:
            await hosts.close_all()
            for slot in list(hosts.slots.values()):
                ray.kill(slot.handle, no_restart=True)


async def get(url: str) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not await _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.25)


async def _holds(condition: Callable[[], object]) -> bool:
    value = condition()
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


def hd_frames(client: Client) -> int:
    return sum(luma.shape == (720, 1280) for _, _, luma in client.frames)


async def upload(url: str, image: torch.Tensor) -> str:
    """POST /avatars with a PNG; the new picture's id."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    headers = {"Content-Type": "image/png"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/avatars", data=buffer.getvalue(), headers=headers) as r,
    ):
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def worker_of(url: str, session: str | None) -> str:
    status, state = await get(f"{url}/sessions/{session}")
    assert status == 200 and isinstance(state, dict), state
    return str(state.get("worker") or state["state"])


@pytest.mark.realtime
def test_a_fleet_grows_places_admits_streams_fails_over_restarts_and_shrinks(
    local_ray: object, bundle: Path, speech: Path
) -> None:
    """One worker to start, at most two, one session each: the life of a fleet in order."""

    async def main() -> None:
        settings = FleetSettings(min_workers=1, max_workers=2, sessions_per_worker=1, idle_s=2.0)
        async with running_fleet(bundle, settings) as (fleet, url):
            first = await connect(url, speech)
            full = r"503.*the fleet is full \(1 of 2 workers running, 1 session each\); another worker is"
            with pytest.raises(RuntimeError, match=full):
                await connect(url, speech)
            await until(lambda: sum(s.healthy for s in fleet.slots.values()) == 2, "a second worker starts")
            second = await connect(url, speech)
            workers = [await worker_of(url, first.session), await worker_of(url, second.session)]
            assert workers == ["ihuman-worker-0", "ihuman-worker-1"], "the two talkers share a worker"
            full = r"503.*the fleet is full \(2 of 2 workers running, 1 session each\); try again when"
            with pytest.raises(RuntimeError, match=full):
                await connect(url, speech)

            viewers = [await connect(url, session=c.session) for c in (first, second)]
            peers = [first, second, *viewers]
            await until(lambda: all(hd_frames(c) >= 3 for c in peers), "every peer receives 1280x720 video")

            _, metrics = await get(f"{url}/metrics")
            for name in workers:  # each worker's own series, labelled, and the fleet's view of it
                assert f'ihuman_sessions{{worker="{name}"}} 1.0' in str(metrics)
                assert f'ihuman_fleet_worker_up{{node="127.0.0.1",worker="{name}"}} 1.0' in str(metrics)

            # Kill the first talker's worker the hard way: its session ends, the other runs on.
            os.kill(int(fleet.slots[workers[0]].status["pid"]), signal.SIGKILL)
            await until(lambda: _ended(url, first.session), "the killed worker's session is reported ended")
            _, state = await get(f"{url}/sessions/{first.session}")
            assert isinstance(state, dict) and workers[0] in state["reason"], state
            seen = hd_frames(second)
            await until(lambda: hd_frames(second) >= seen + 10, "the other worker's talker still gets video")

            await second.close()
            await until(lambda: _ended(url, second.session), "the front learns that the talker left")
            third = await connect(url, speech)
            assert await worker_of(url, third.session) == workers[1], "the next offer goes to the survivor"
            await until(lambda: hd_frames(third) >= 3, "the next talker receives video")
            await until(lambda: fleet.slots[workers[0]].healthy, "Ray restarts the killed worker")
            assert fleet.slots[workers[0]].restarts == 1

            await third.close()  # the second worker idles while the first has room: it goes
            await until(
                lambda: list(fleet.slots) == [workers[0]], "the idle worker beyond the first is removed"
            )
            for client in (first, *viewers):
                await client.close()

    asyncio.run(main())


@pytest.mark.realtime
def test_a_new_front_takes_over_the_workers_and_calls_of_the_last(
    local_ray: object, bundle: Path, speech: Path
) -> None:
    async def main() -> None:
        settings = FleetSettings(min_workers=1, max_workers=1, sessions_per_worker=1, name="handover")
        async with running_fleet(bundle, settings) as (old, old_url):
            picture = await upload(old_url, make_clip(9, 0.04, 320, 176).frames[0])
            talker = await connect(old_url, speech, avatar=picture)  # the worker has the upload
            await until(lambda: hd_frames(talker) >= 3, "the talker receives video")
            old.release()  # the old front steps back; its worker and the call run on
            async with running_fleet(bundle, settings) as (new, url):
                assert list(new.slots) == ["handover-0"] and new.slots["handover-0"].restarts == 0
                assert await worker_of(url, talker.session) == "handover-0"  # the directory, rebuilt
                seen = hd_frames(talker)
                viewer = await connect(url, session=talker.session)
                await until(lambda: hd_frames(viewer) >= 3, "a viewer joins through the new front")
                assert hd_frames(talker) > seen, "the call went on through the handover"
                await viewer.close()
            await talker.close()

    asyncio.run(main())


async def _ended(url: str, session: str | None) -> bool:
    _, state = await get(f"{url}/sessions/{session}")
    return isinstance(state, dict) and state.get("state") == "ended"


def test_the_single_process_server_needs_no_ray(tmp_path: Path) -> None:
    """Ray made unimportable: `ihuman serve` still loads, and `--ray` says what to install."""
    blocker = tmp_path / "ray.py"
    blocker.write_text("raise ImportError('blocked for this test', name='ray')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import transport.server, ihuman.commands.serve;"
        "from ihuman.cli import main; sys.exit(main(['serve', '--ray', '--port', '1']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2, run.stderr
    assert "pip install 'infinityhuman[scale]'" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "2", "--max-workers", "1"], "--workers must be at least 1 and at most --max-workers"),
        (["--sessions-per-worker", "0"], "--sessions-per-worker must be at least 1"),
        (["--output", "udp://127.0.0.1:9"], "--output goes with the single-process server"),
    ],
)
def test_fleet_arguments_are_checked_before_anything_starts(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--ray", "--port", "1", *arguments]) == 2
    assert message in capsys.readouterr().err
