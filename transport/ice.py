"""ICE set-up: which servers, and which local addresses the server offers as candidates.

aiortc adds a public STUN server when given no configuration, and aioice never
offers 127.0.0.1. We pass the ICE
servers explicitly (none by default) and choose the host addresses: every
interface plus loopback (so a browser on the same machine can always connect),
or exactly a given list (tests: loopback only; traffic must never leave it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from engine.exceptions import ConfigError

log = logging.getLogger(__name__)

_default_host_addresses = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer exactly `addresses` as host candidates (None: every interface plus 127.0.0.1).

    aioice reads its host addresses from a module function: this sets it for the process.
    """

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses is not None:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        found = _default_host_addresses(use_ipv4, use_ipv6)
        return [*found, "127.0.0.1"] if use_ipv4 else found

    aioice.ice.get_host_addresses = host_addresses
    offered = "every interface + 127.0.0.1" if addresses is None else list(addresses)
    log.info("ICE host candidates: %s", offered)


def configuration(ice_servers: Sequence[str]) -> RTCConfiguration:
    """RTCConfiguration with exactly these STUN/TURN URLs (turn:user:pass@host:port for TURN)."""
    servers = []
    for url in ice_servers:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ConfigError(f"ICE server {url!r} must start with stun:, turn: or turns:")
        if url.startswith(("turn:", "turns:")) and "@" in url:
            scheme, rest = url.split(":", 1)
            credentials, host = rest.rsplit("@", 1)
            user, _, password = credentials.partition(":")
            servers.append(RTCIceServer(urls=f"{scheme}:{host}", username=user, credential=password))
        else:
            servers.append(RTCIceServer(urls=url))
    return RTCConfiguration(iceServers=servers)
