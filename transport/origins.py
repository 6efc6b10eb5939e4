"""Which web pages may drive the server: the `Host` it is asked as, and the `Origin` of changes.

A page on any site can make a browser send requests to 127.0.0.1; two checks stop it from using
the local engine. DNS rebinding (a site's name re-pointed at 127.0.0.1, so the page is
"same-origin" with the server) shows in the `Host` header: only the names the server serves are
answered (421 otherwise). A cross-site request (a form or fetch from another origin) carries that
origin in `Origin`: state-changing requests (POST: offers, uploads) from a page of another origin
are refused (403). Requests without `Origin` come from programs, not pages, and pass (the token,
when set, still guards every route).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from transport.errors import RequestError

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
Handler = Callable[[web.Request], object]


def served_names(host: str, public: Iterable[str] = ()) -> frozenset[str]:
    """The host names the server answers to: loopback names, the address it listens on (unless it
    listens on every address), and the `--public-host` names."""
    names = {*LOCAL_NAMES, *(name.lower() for name in public)}
    try:
        if not ipaddress.ip_address(host).is_unspecified:
            names.add(host)
    except ValueError:  # a name, not an address
        names.add(host.lower())
    return frozenset(names)


def _hostname(authority: str) -> str | None:
    """'name:port' or '[v6]:port' -> the name (lower case); None when malformed."""
    try:
        return urlsplit(f"//{authority}").hostname
    except ValueError:
        return None


def origin_middleware(names: frozenset[str]) -> Callable:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _hostname(request.headers.get("Host", ""))
        if host not in names:
            raise RequestError(
                f"this server does not answer to the host {request.headers.get('Host', '')!r}; "
                "start it with --public-host NAME to serve that name",
                421,
            )
        origin = request.headers.get("Origin")
        changes = request.method not in ("GET", "HEAD", "OPTIONS")
        if changes and origin is not None and urlsplit(origin).hostname not in names:
            raise RequestError(f"requests from pages of {origin} may not change this server", 403)
        return await handler(request)  # type: ignore[misc]

    return check
