"""A worker as the front knows it: its Ray handle, health, incarnation and sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Slot:
    """A worker as the front knows it."""

    name: str
    handle: Any  # ray.actor.ActorHandle
    healthy: bool = False
    incarnation: str | None = None
    restarts: int = 0
    draining: bool = False  # takes no new session; removed once its sessions are over
    node: str = ""
    sessions: set[str] = field(default_factory=set)
    status: dict[str, Any] = field(default_factory=dict)
    metrics: bytes = b""  # the last scrape

    def free(self, capacity: int) -> int:
        return capacity - len(self.sessions)
