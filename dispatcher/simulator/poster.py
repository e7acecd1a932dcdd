"""The simulator's default webhook poster: keep-alive ``H11Pool``s, one per receiver origin.

An ``httpx.AsyncClient`` POST cost the simulator ~11% of its CPU in
``bench.e2e`` (statuses by 500), more than building the statuses; the hot-path
client of the daemon does the same for a fraction. Receivers are few (one URL
per number), so the pools and request targets are kept for the run.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Final, final

from actors.http.pool import H11Pool
from actors.transport import Headers

_JSON: Final = (b"content-type", b"application/json")


@final
class PoolPoster:
    """``await poster(url, body) -> HTTP status`` over pooled keep-alive connections.

    Raises what ``H11Pool.request`` raises (``TransportError``, ``ValueError``
    for a URL it cannot serve): the webhook sender counts it as a failed attempt.
    """

    def __init__(self, *, max_connections: int, timeout: float) -> None:
        self._max_connections = max_connections
        self._timeout = timeout
        self._pools: dict[str, H11Pool] = {}
        self._routes: dict[str, tuple[H11Pool, bytes, Headers]] = {}

    async def __call__(self, url: str, body: bytes, extra_headers: Headers | None = None) -> int:
        """``extra_headers``: sent after the content type (e.g. a Cloud webhook's signature); one
        that leads with a content type replaces the JSON one."""
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = self._route(url)
        pool, target, headers = route
        if extra_headers:
            if extra_headers[0][0] == b"content-type":  # the sender's own (a form post)
                headers = [extra_headers[0], *headers[1:], *extra_headers[1:]]
            else:
                headers = [*headers, *extra_headers]
        return (await pool.request(b"POST", target, headers, body)).status

    def _route(self, url: str) -> tuple[H11Pool, bytes, Headers]:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        origin = f"{parts.scheme}://{f'[{host}]' if ':' in host else host}"
        if parts.port is not None:
            origin += f":{parts.port}"
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = H11Pool(
                origin,
                max_connections=self._max_connections,
                connect_timeout=self._timeout,
                request_timeout=self._timeout,
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [_JSON]
        if parts.username is not None:  # as httpx does with userinfo: Basic auth
            userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers.append((b"authorization", b"Basic " + base64.b64encode(userinfo.encode())))
        return pool, target.encode("ascii"), headers

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()
        self._routes.clear()
