"""The fleet as the HTTP front sees it: placement, the session directory, health, failover, scaling.

`Fleet` is a SessionHost (transport.server): the server's routes are the same as on one process.

- Placement: a talker goes to the healthy worker with the most free places; a worker that
  restarted after a crash comes last among equals. The worker has the last word (it refuses when
  full, and the front tries the next); when every worker is full the offer gets 503.
- Directory: which worker holds which session, so that viewers reach it; refreshed from every
  worker's status once a second (a session that ended there is dropped, with the worker's reason).
- Failover: a worker that stops answering is taken out of placement and its sessions are ended
  with a reason that their pages read from GET /sessions/{id} (the dead worker cannot tell them);
  Ray restarts it (max_restarts), and the front gives it the fleet's pictures before it takes
  sessions again.
- Scaling: between `min_workers` and `max_workers`: an offer that finds the fleet full starts one
  more worker (on a cluster, Ray's autoscaler adds a machine when no node has the GPU it asks
  for). When the fleet has had free places for a whole worker more than it needs for `idle_s`,
  its emptiest worker drains: it takes no new session and is removed when its last one ends, so
  scaling down never cuts a call (a draining worker takes sessions again if the rest fill up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import ray
from aiortc import RTCSessionDescription
from ray.exceptions import RayError

from engine.exceptions import EngineError
from transport.avatars import Avatar, AvatarStore
from transport.errors import RequestError
from transport.fleet.metrics import fleet_metrics
from transport.fleet.slot import Slot
from transport.fleet.worker import FleetWorker, WorkerSpec
from transport.registry import ENDED_KEPT

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 1.0
CALL_TIMEOUT_S = 10.0  # a status or metrics call that takes longer: the worker counts as stalled
OFFER_TIMEOUT_S = 30.0  # answering an offer (the engine session opens first)
CLOSE_TIMEOUT_S = 3.0  # within the server's drain (transport.server.DRAIN_S)


@dataclass(frozen=True)
class FleetSettings:
    min_workers: int = 2
    max_workers: int = 2
    sessions_per_worker: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    idle_s: float = 300.0  # spare places for a worker this long: one worker drains, then goes
    start_timeout_s: float = 600.0  # loading (and compiling) a model on a new machine takes minutes
    name: str = "ihuman-worker"  # workers are Ray actors named NAME-0, NAME-1, ... (`ray list actors`)

    def check(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise EngineError("--workers must be at least 1 and at most --max-workers")
        if self.sessions_per_worker < 1:
            raise EngineError("--sessions-per-worker must be at least 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise EngineError("--gpus-per-worker and --cpus-per-worker take values >= 0")


class Fleet:
    def __init__(self, spec: WorkerSpec, avatars: AvatarStore, settings: FleetSettings) -> None:
        settings.check()
        self.spec, self.avatars, self.settings = spec, avatars, settings
        avatars.on_evict = self._forget_avatar
        self.slots: dict[str, Slot] = {}
        self.directory: dict[str, Slot] = {}  # session id -> the worker holding it
        self.ended: OrderedDict[str, str] = OrderedDict()
        self.rejected_total = 0
        self._actor = ray.remote(FleetWorker)
        # Held for the fleet's life: Ray rebuilds a restarted worker from this very object.
        self._spec = ray.put(spec)
        self._counter = 0
        self._spare_since: float | None = None  # since when the fleet could do with a worker less
        self._tasks: set[asyncio.Task] = set()

    # ----- workers ------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        """Take over the workers a previous front of this fleet left running (their calls go on),
        start more up to min_workers, and wait until all are ready (model loaded, warmed up): the
        server listens after this."""
        await self._adopt()
        slots = [self._new_slot() for _ in range(self.settings.min_workers - len(self.slots))]
        log.info("starting %d workers (%d sessions each)", len(slots), self.settings.sessions_per_worker)
        await asyncio.gather(*(self._bring_up(slot) for slot in slots))
        self._spawn(self._watch())

    async def _adopt(self) -> None:
        """Workers outlive their front (detached actors): a front that restarts after a crash finds
        them by name and rebuilds the directory from what each reports."""
        for number in range(self.settings.max_workers):
            name = f"{self.settings.name}-{number}"
            try:
                handle = ray.get_actor(name)
            except ValueError:  # no such actor
                continue
            slot = Slot(name, handle)
            try:
                status = await asyncio.wait_for(_call(handle.status), CALL_TIMEOUT_S)
                await self._give_avatars(slot)
            except (RayError, TimeoutError) as err:
                log.warning("%s is left over but does not answer (%s): removing it", name, err)
                self._remove(slot)
                continue
            self.slots[name] = slot
            self._take(slot, status)
            self._counter = max(self._counter, number + 1)
            log.info("%s taken over with %d session(s)", name, len(slot.sessions))

    def _new_slot(self) -> Slot:
        while f"{self.settings.name}-{self._counter}" in self.slots:
            self._counter += 1
        name = f"{self.settings.name}-{self._counter}"
        self._counter += 1
        handle = self._actor.options(
            name=name,
            num_gpus=self.settings.gpus_per_worker,
            num_cpus=self.settings.cpus_per_worker,
            max_restarts=-1,  # Ray brings a dead worker back; its sessions are gone (failover)
            # Not tied to the front's life: if the front dies, the calls on the workers go on and a
            # new front takes the workers over (_adopt). A front that stops cleanly removes them.
            lifetime="detached",
        ).remote(self._spec)
        slot = Slot(name, handle)
        self.slots[name] = slot
        return slot

    async def _bring_up(self, slot: Slot) -> None:
        status = await asyncio.wait_for(_call(slot.handle.ready), self.settings.start_timeout_s)
        await self._give_avatars(slot)
        self._take(slot, status)
        log.info("%s ready on %s (%s)", slot.name, slot.node, status.get("weights"))

    async def _give_avatars(self, slot: Slot) -> None:
        await _call(slot.handle.add_avatars, *self.avatars.all())

    def _take(self, slot: Slot, status: dict[str, Any]) -> None:
        """A status report: a new incarnation is a restarted worker (its old sessions are gone)."""
        if slot.incarnation is not None and status["incarnation"] != slot.incarnation:
            slot.restarts += 1
            self._end_sessions(slot, f"the worker {slot.name} holding this session restarted")
        slot.incarnation, slot.node, slot.status = status["incarnation"], status["node"], status
        running, ended = set(status["sessions"]), status["ended"]
        # A session placed while this report was on its way is in neither list: it stays.
        for gone in slot.sessions & ended.keys():
            self._ended(gone, ended[gone])
        slot.sessions = (slot.sessions - ended.keys()) | running
        for session in running:
            self.directory[session] = slot
        slot.healthy = True

    def _lost(self, slot: Slot, err: BaseException) -> None:
        if slot.healthy:
            log.warning("%s stopped answering (%s): its sessions end", slot.name, type(err).__name__)
        slot.healthy = False
        self._end_sessions(
            slot, f"the worker {slot.name} holding this session stopped ({type(err).__name__})"
        )

    def _end_sessions(self, slot: Slot, reason: str) -> None:
        for session in slot.sessions:
            self._ended(session, reason)
        slot.sessions = set()

    def _ended(self, session: str, reason: str) -> None:
        self.directory.pop(session, None)
        self.ended[session] = reason
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)

    async def _watch(self) -> None:
        """Once a second: every worker's status (health, sessions); then scale."""
        while True:
            slots = list(self.slots.values())
            results = await asyncio.gather(*(self._check(slot) for slot in slots), return_exceptions=True)
            for slot, result in zip(slots, results, strict=True):
                if isinstance(result, Exception):  # a bug, not a worker's failure: keep watching
                    log.error("checking %s failed", slot.name, exc_info=result)
            self._scale_down()
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def _check(self, slot: Slot) -> None:
        if slot.incarnation is None:
            return  # still starting: _bring_up takes it when it is ready
        try:
            status = await asyncio.wait_for(_call(slot.handle.status), CALL_TIMEOUT_S)
            if status["incarnation"] != slot.incarnation:
                await self._give_avatars(slot)  # before it takes sessions again
        except (RayError, TimeoutError) as err:
            self._lost(slot, err)
            return
        self._take(slot, status)

    def _placeable(self) -> list[Slot]:
        capacity = self.settings.sessions_per_worker
        ready = [s for s in self.slots.values() if s.healthy and s.free(capacity) > 0]
        if ready and all(s.draining for s in ready):  # load came back: keep the draining one
            ready[0].draining = False
        ready = [s for s in ready if not s.draining]
        return sorted(ready, key=lambda s: (-s.free(capacity), s.restarts, s.name))

    def _scale_up(self) -> bool:
        """Start one more worker (in the background) if the fleet may grow; True if it does."""
        if len(self.slots) >= self.settings.max_workers:
            return False
        if any(not s.healthy and s.incarnation is None for s in self.slots.values()):
            return True  # one is starting already
        slot = self._new_slot()
        log.info("fleet full: starting %s", slot.name)

        async def bring_up() -> None:
            try:
                await self._bring_up(slot)
            except (RayError, TimeoutError) as err:
                log.error("%s did not start: %s", slot.name, err)
                self._remove(slot)

        self._spawn(bring_up())
        return True

    def _scale_down(self) -> None:
        """Drain a worker once the others have had a worker's worth of free places for idle_s;
        remove a draining worker when its last session is over."""
        for slot in [s for s in self.slots.values() if s.draining and not s.sessions]:
            log.info("%s drained: removing it", slot.name)
            self._remove(slot)
        capacity = self.settings.sessions_per_worker
        active = [s for s in self.slots.values() if s.healthy and not s.draining]
        spare = sum(s.free(capacity) for s in active) >= 2 * capacity  # one could go, room would stay
        if (
            not spare
            or len(active) <= self.settings.min_workers
            or any(s.draining for s in self.slots.values())
        ):
            self._spare_since = None
            return
        now = time.monotonic()
        self._spare_since = self._spare_since or now
        if now - self._spare_since >= self.settings.idle_s:
            emptiest = min(reversed(active), key=lambda s: len(s.sessions))  # the newest among equals
            log.info(
                "%s draining: the fleet had spare places for %.0f s", emptiest.name, now - self._spare_since
            )
            emptiest.draining, self._spare_since = True, None

    def _remove(self, slot: Slot) -> None:
        self.slots.pop(slot.name, None)
        with contextlib.suppress(RayError):
            ray.kill(slot.handle, no_restart=True)

    def _forget_avatar(self, avatar_id: str) -> None:
        for slot in self.slots.values():
            slot.handle.forget_avatar.remote(avatar_id)  # in the background: nothing waits on it

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- the SessionHost side (transport.server) ----------------------------------------------
    @property
    def max_sessions(self) -> int:
        return sum(s.healthy for s in self.slots.values()) * self.settings.sessions_per_worker

    async def talker(
        self, offer: RTCSessionDescription, avatar: str | None, text: str | None
    ) -> tuple[str, str]:
        if avatar is not None:
            self.avatars.get(avatar)  # an unknown id is refused here (404), not on a worker
        for slot in self._placeable():
            try:
                reply = await asyncio.wait_for(
                    _call(slot.handle.talker, offer.sdp, avatar, text), OFFER_TIMEOUT_S
                )
            except RayError as err:
                self._lost(slot, err)
                continue
            except TimeoutError:  # busy, not necessarily gone: its health check decides that
                log.warning("%s did not answer an offer within %.0f s", slot.name, OFFER_TIMEOUT_S)
                continue
            if reply.get("status") == 503:  # full after all (another offer took the place)
                continue
            _raise_error(reply)
            session = str(reply["session"])
            slot.sessions.add(session)
            self.directory[session] = slot
            return session, str(reply["sdp"])
        self.rejected_total += 1
        up, most = sum(s.healthy for s in self.slots.values()), self.settings.max_workers
        per = self.settings.sessions_per_worker
        each = f"{per} session{'s' if per > 1 else ''}"
        wait = (
            "another worker is starting, try again in a few seconds"
            if self._scale_up()
            else ("try again when a session ends")
        )
        raise RequestError(
            f"the fleet is full ({up} of {most} workers running, {each} each); {wait}",
            503,
            headers={"Retry-After": "5"},
        )

    async def viewer(self, offer: RTCSessionDescription, session_id: str) -> str:
        slot = self.directory.get(session_id)
        if slot is None:
            raise RequestError(f"no running avatar session {session_id!r}", 404)
        try:
            reply = await asyncio.wait_for(_call(slot.handle.viewer, offer.sdp, session_id), OFFER_TIMEOUT_S)
        except (RayError, TimeoutError) as err:
            self._lost(slot, err)
            raise RequestError(f"the worker holding session {session_id!r} stopped", 503) from None
        _raise_error(reply)
        return str(reply["sdp"])

    async def close_all(self, notice: str | None = None) -> None:
        """The server stops: every session is told and ended, and the fleet's workers go with it."""

        async def close(slot: Slot) -> None:
            with contextlib.suppress(RayError, TimeoutError):
                await asyncio.wait_for(_call(slot.handle.close_all, notice), CLOSE_TIMEOUT_S)

        self.release()
        try:
            await asyncio.gather(*(close(s) for s in self.slots.values() if s.healthy))
        finally:  # even when the drain is cut short: detached workers would otherwise stay
            for slot in list(self.slots.values()):
                self._remove(slot)

    def release(self) -> None:
        """Stop watching, placing and scaling, and leave the workers and their calls running: for a
        front that hands over to a new one (an upgrade of the front), which takes them over."""
        for task in list(self._tasks):
            task.cancel()

    async def share_avatar(self, avatar: Avatar) -> None:
        """Every worker has the picture before the upload is answered (a talker may pick it next)."""
        picture = ray.put(avatar)  # one copy in the object store, read by each worker of a machine
        slots = [s for s in self.slots.values() if s.healthy]
        results = await asyncio.gather(
            *(_call(s.handle.add_avatars, picture) for s in slots), return_exceptions=True
        )
        for slot, result in zip(slots, results, strict=True):
            if isinstance(result, BaseException):  # it gets all pictures when it comes back
                self._lost(slot, result)

    async def metrics_text(self) -> bytes:
        async def scrape(slot: Slot) -> None:
            try:
                slot.metrics = await asyncio.wait_for(_call(slot.handle.metrics), CALL_TIMEOUT_S)
            except (RayError, TimeoutError):
                slot.metrics = b""

        slots = list(self.slots.values())
        await asyncio.gather(*(scrape(s) for s in slots if s.healthy))
        return fleet_metrics(slots, self.max_sessions, self.rejected_total)

    def running(self) -> int:
        return len(self.directory)

    def session_state(self, session_id: str) -> dict[str, str]:
        slot = self.directory.get(session_id)
        if slot is not None:
            return {"session": session_id, "state": "running", "worker": slot.name, "node": slot.node}
        if session_id in self.ended:
            return {"session": session_id, "state": "ended", "reason": self.ended[session_id]}
        raise RequestError(f"no avatar session {session_id!r}", 404)

    def about(self) -> dict[str, object]:
        workers = [
            {
                "name": s.name,
                "node": s.node,
                "healthy": s.healthy,
                "sessions": len(s.sessions),
                "restarts": s.restarts,
                "draining": s.draining,
            }
            for s in self.slots.values()
        ]
        first = next((s.status for s in self.slots.values() if s.status), {})
        return {"preset": first.get("preset"), "weights": first.get("weights"), "workers": workers}


async def _call(method: Any, *args: object) -> Any:
    """Call an actor method and await its reply (Ray's ObjectRef is awaitable)."""
    return await method.remote(*args)


def _raise_error(reply: dict[str, Any]) -> None:
    if "error" in reply:
        raise RequestError(str(reply["error"]), int(reply.get("status", 400)))
