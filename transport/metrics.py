"""`GET /metrics`: Prometheus text, collected from the live sessions at scrape time.

A collector (not gauges kept up to date) means a closed session leaves no
stale series behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from transport.heap import heap_usage
from transport.session import AvatarSession


class SessionCounts(Protocol):
    """What the collector reads of the session registry (transport.registry)."""

    sessions: dict[str, AvatarSession]
    max_sessions: int
    started_total: int
    rejected_total: int
    failed_total: int


class SessionCollector(Collector):
    def __init__(self, registry: SessionCounts) -> None:
        self.registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self.registry
        yield GaugeMetricFamily("ihuman_sessions", "Avatar sessions running", value=len(r.sessions))
        yield GaugeMetricFamily("ihuman_sessions_max", "Avatar sessions allowed", value=r.max_sessions)
        yield CounterMetricFamily("ihuman_sessions_started", "Avatar sessions started", value=r.started_total)
        yield CounterMetricFamily(
            "ihuman_sessions_rejected", "Offers refused: all sessions in use", value=r.rejected_total
        )
        yield CounterMetricFamily(
            "ihuman_sessions_failed", "Sessions ended because a stage failed", value=r.failed_total
        )
        session = ["session"]
        peers = GaugeMetricFamily("ihuman_peers", "Connected peers", labels=["session", "role"])
        fps = GaugeMetricFamily("ihuman_fps", "Frames per second sent", labels=session)
        latency = GaugeMetricFamily("ihuman_added_latency_ms", "Added latency", labels=[*session, "quantile"])
        delay = GaugeMetricFamily("ihuman_target_delay_ms", "Audio in to audio+video out", labels=session)
        fallbacks = CounterMetricFamily("ihuman_fallback_frames", "Frames not fully refined", labels=session)
        degrade = GaugeMetricFamily("ihuman_degrade_level", "Quality degrade level", labels=session)
        # A peer whose sender (its encoder) falls behind loses the oldest frames of its backlog.
        relay_dropped = CounterMetricFamily(
            "ihuman_relay_dropped", "Frames peers lost behind their backlog", labels=[*session, "kind"]
        )
        # What the session's pacer skipped because its consumer fell behind the clock.
        skipped = CounterMetricFamily(
            "ihuman_pacer_skipped",
            "Frames and 20-ms audio pieces skipped behind the clock",
            labels=[*session, "kind"],
        )
        out = [*session, "output"]
        streaming = GaugeMetricFamily(
            "ihuman_output_streaming", "1 while an output is delivering", labels=out
        )
        dropped = CounterMetricFamily(
            "ihuman_output_dropped", "Items an output dropped", labels=[*out, "kind"]
        )
        reconnects = CounterMetricFamily(
            "ihuman_output_reconnects", "Times an output reconnected", labels=out
        )
        for live in list(r.sessions.values()):
            s = live.session.snapshot()
            for role in ("talker", "viewer"):
                peers.add_metric([live.id, role], sum(p.role == role for p in live.peers))
            fps.add_metric([live.id], s.fps_out)
            for q in ("p50", "p90", "p99"):
                if s.added_latency_ms is not None:
                    latency.add_metric([live.id, q], s.added_latency_ms[q])
            delay.add_metric([live.id], s.target_delay_ms)
            fallbacks.add_metric([live.id], sum(s.fallbacks.values()))
            degrade.add_metric([live.id], s.degrade_level)
            relay_dropped.add_metric([live.id, "video"], live.video_relay.dropped)
            relay_dropped.add_metric([live.id, "audio"], live.audio_relay.dropped)
            skipped.add_metric([live.id, "video"], s.consumer_skipped)
            skipped.add_metric([live.id, "audio"], s.audio_skipped)
            for o in (runner.stats() for runner in live.outputs):
                labels = [live.id, str(o["url"])]
                streaming.add_metric(labels, float(o["state"] == "streaming"))
                for kind, count in o["dropped"].items():  # type: ignore[union-attr]
                    dropped.add_metric([*labels, kind], count)
                reconnects.add_metric(labels, o["reconnects"])  # type: ignore[arg-type]
        yield from (peers, fps, latency, delay, fallbacks, degrade, relay_dropped, skipped)
        yield from (streaming, dropped, reconnects)


class RuntimeCollector(Collector):
    """What grows when something leaks: threads, asyncio tasks and the C heap, in use and held free
    (transport.heap; the resident memory and open files come from prometheus_client's process
    collector beside it)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "ihuman_threads", "Threads of the server process", value=threading.active_count()
        )
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from outside the event loop
            tasks = 0
        yield GaugeMetricFamily("ihuman_asyncio_tasks", "Tasks of the server's event loop", value=tasks)
        if (heap := heap_usage()) is not None:
            yield GaugeMetricFamily("ihuman_heap_in_use_bytes", "C heap allocated", value=heap.in_use_bytes)
            yield GaugeMetricFamily(
                "ihuman_heap_free_bytes", "C heap freed and held for reuse", value=heap.free_bytes
            )


def metrics_registry(sessions: SessionCounts) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(sessions))
    registry.register(RuntimeCollector())
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds, CPU seconds
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
