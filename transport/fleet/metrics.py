"""The front's GET /metrics for a fleet: every worker's metrics and the front's own, in one page.

Each worker renders its own (the single-process server's: sessions, peers, fps, latency, memory,
threads); the front scrapes them when it is scraped and adds a `worker` label to every sample
(`front` for its own process), merging families of the same name so that the page stays valid
Prometheus text. Beside them, the fleet's own: workers up, places, sessions per worker, restarts,
offers refused because the fleet was full.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from transport.fleet.slot import Slot
from transport.metrics import RuntimeCollector

FRONT = "front"


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _fleet_families(slots: list[Slot], places: int, rejected: int) -> Iterator[Metric]:
    yield GaugeMetricFamily("ihuman_fleet_workers", "Workers started", value=len(slots))
    yield GaugeMetricFamily("ihuman_fleet_places", "Sessions the healthy workers can take", value=places)
    yield CounterMetricFamily("ihuman_fleet_rejected", "Offers refused: every worker full", value=rejected)
    up = GaugeMetricFamily("ihuman_fleet_worker_up", "1 while the worker answers", labels=["worker", "node"])
    sessions = GaugeMetricFamily("ihuman_fleet_worker_sessions", "Sessions on the worker", labels=["worker"])
    restarts = CounterMetricFamily(
        "ihuman_fleet_worker_restarts", "Times Ray restarted it", labels=["worker"]
    )
    for slot in slots:
        up.add_metric([slot.name, slot.node], float(slot.healthy))
        sessions.add_metric([slot.name], len(slot.sessions))
        restarts.add_metric([slot.name], slot.restarts)
    yield from (up, sessions, restarts)


def _labelled(families: Iterable[Metric], worker: str) -> Iterator[Metric]:
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            copy.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        yield copy


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """One family per name (a family may come from every worker): the samples of all of them."""
    by_name: dict[str, Metric] = {}
    for family in families:
        if family.name in by_name:
            by_name[family.name].samples.extend(family.samples)
        else:
            by_name[family.name] = family
    return list(by_name.values())


def fleet_metrics(slots: list[Slot], places: int, rejected: int) -> bytes:
    """The page: the fleet's own families, then every process's (the front's and each scraped
    worker's, `slot.metrics`), labelled by process."""
    front = CollectorRegistry(auto_describe=False)
    front.register(RuntimeCollector())
    ProcessCollector(registry=front)
    families = list(_labelled(front.collect(), FRONT))
    for slot in slots:
        if slot.metrics:
            families.extend(_labelled(text_string_to_metric_families(slot.metrics.decode()), slot.name))
    page = CollectorRegistry(auto_describe=False)
    page.register(_Families([*_fleet_families(slots, places, rejected), *_merged(families)]))
    return generate_latest(page)
