"""Several endpoints for one number (WhatsApp On-Prem multiconnect / HA): one ``Transport`` over them.

Choice: among healthy endpoints, the one with the fewest requests outstanding
(ties: the one used least), so a slow endpoint gets less work by itself.

Failover is safe only where it cannot duplicate: a ``ConnectError`` proves the
request never left, so it is sent again at once to the next endpoint, inside
the same ``request()`` call. A timeout or a lost response may have been acted
on, so it is *not* resent here: it goes back to the actor as an ambiguous
outcome (its ``on_ambiguous`` policy decides), and the endpoint is marked down.

Health: an endpoint is marked down on a connection error, a timeout, a lost
response or ``unhealthy_after`` 5xx answers in a row; its upkeep (``due_at`` /
``upkeep``, run by the actor when due) probes every endpoint each
``check_interval`` seconds with ``GET /v1/health`` and marks it up again on any HTTP answer (even a 401: the
API is there). When every endpoint is down, they are still tried (last resort),
so a recovered endpoint is found without waiting for the next probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import attrs
import structlog
import trio

from actors.transport import (
    BodyStream,
    ConnectError,
    Headers,
    Response,
    StreamingTransport,
    Transport,
    TransportError,
)

log = structlog.get_logger()

HEALTH_PATH: Final = b"/v1/health"


@attrs.define(eq=False)
class Endpoint:
    url: str
    transport: Transport
    healthy: bool = True
    outstanding: int = 0
    requests: int = 0
    failures: int = 0  # times marked down
    server_errors: int = 0  # 5xx answers in a row
    last_error: str | None = None


@attrs.frozen
class EndpointStatistics:
    url: str
    healthy: bool
    outstanding: int
    requests: int
    failures: int
    last_error: str | None


@final
class MultiEndpoint:
    """A ``Transport`` that spreads one number's requests over several endpoints."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, Transport]],
        *,
        check_interval: float = 5.0,
        check_timeout: float = 2.0,
        unhealthy_after: int = 3,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self._endpoints = [Endpoint(url, transport) for url, transport in endpoints]
        self._check_interval = check_interval
        self._check_timeout = check_timeout
        self._unhealthy_after = unhealthy_after
        self.failovers = 0  # requests re-sent to another endpoint after a connection error
        self._next_check: float | None = None  # trio time of the next probe round (set when first asked)

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    def statistics(self) -> list[EndpointStatistics]:
        return [
            EndpointStatistics(e.url, e.healthy, e.outstanding, e.requests, e.failures, e.last_error)
            for e in self._endpoints
        ]

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        """Send through the best endpoint; on a connection error, through the next one.

        Raises:
            ConnectError: no endpoint could be reached (the request left nowhere).
            TransportError: an endpoint may have received the request (ambiguous).
        """
        tried: set[int] = set()
        errors: list[str] = []
        while True:
            endpoint = self._choose(tried)
            if endpoint is None:
                raise ConnectError("no endpoint reachable: " + "; ".join(errors))
            tried.add(id(endpoint))
            endpoint.outstanding += 1
            endpoint.requests += 1
            try:
                resp = await endpoint.transport.request(method, target, headers, body)
            except ConnectError as exc:
                self._mark_down(endpoint, exc)
                errors.append(f"{endpoint.url}: {exc}")
                if len(tried) < len(self._endpoints):
                    self.failovers += 1
                    log.warning("endpoint.failover", endpoint=endpoint.url, error=str(exc))
                continue
            except TransportError as exc:
                self._mark_down(endpoint, exc)
                raise
            finally:
                endpoint.outstanding -= 1
            if resp.status >= 500:
                endpoint.server_errors += 1
                if endpoint.server_errors >= self._unhealthy_after:
                    self._mark_down(endpoint, f"{endpoint.server_errors} HTTP {resp.status} answers in a row")
            else:
                self._mark_up(endpoint)
            return resp

    async def stream(
        self, method: bytes, target: bytes, headers: Headers, *, limit: int, deadline: float
    ) -> BodyStream:
        """A download from the best endpoint, failing over on a connection error like ``request``
        (an endpoint that cannot stream answers whole, within ``limit``)."""
        tried: set[int] = set()
        errors: list[str] = []
        while True:
            endpoint = self._choose(tried)
            if endpoint is None:
                raise ConnectError("no endpoint reachable: " + "; ".join(errors))
            tried.add(id(endpoint))
            transport = endpoint.transport
            try:
                if isinstance(transport, StreamingTransport):
                    return await transport.stream(method, target, headers, limit=limit, deadline=deadline)
                return BodyStream.whole(await transport.request(method, target, headers, b""), limit)
            except ConnectError as exc:
                self._mark_down(endpoint, exc)
                errors.append(f"{endpoint.url}: {exc}")

    async def stream_url(
        self, url: str, headers: Headers, *, limit: int, deadline: float, hosts: tuple[str, ...]
    ) -> BodyStream:
        """Through the first endpoint (healthy ones first) that takes ``url``: each refuses, unsent,
        a URL on another endpoint's origin."""
        errors: list[str] = []
        for endpoint in sorted(self._endpoints, key=lambda e: not e.healthy):
            transport = endpoint.transport
            if not isinstance(transport, StreamingTransport):
                continue
            try:
                return await transport.stream_url(url, headers, limit=limit, deadline=deadline, hosts=hosts)
            except ConnectError as exc:
                errors.append(f"{endpoint.url}: {exc}")
        raise ConnectError("no endpoint could fetch the URL: " + "; ".join(errors))

    def _choose(self, tried: set[int]) -> Endpoint | None:
        untried = [e for e in self._endpoints if id(e) not in tried]
        pool = [e for e in untried if e.healthy] or untried  # all down: try them anyway
        if not pool:
            return None
        return min(pool, key=lambda e: (e.outstanding, e.requests))

    def _mark_down(self, endpoint: Endpoint, error: BaseException | str) -> None:
        endpoint.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        endpoint.server_errors = 0
        if endpoint.healthy:
            endpoint.healthy = False
            endpoint.failures += 1
            log.warning("endpoint.down", endpoint=endpoint.url, error=endpoint.last_error)

    def _mark_up(self, endpoint: Endpoint) -> None:
        endpoint.server_errors = 0
        if not endpoint.healthy:
            endpoint.healthy = True
            log.info("endpoint.up", endpoint=endpoint.url)

    def due_at(self) -> float:
        """Trio time of the next probe round: every ``check_interval`` seconds."""
        if self._next_check is None:
            self._next_check = trio.current_time() + self._check_interval
        return self._next_check

    async def upkeep(self) -> None:
        """Probe every endpoint at once if a round is due."""
        if self.due_at() > trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        async with trio.open_nursery() as nursery:
            for endpoint in self._endpoints:
                nursery.start_soon(self._probe, endpoint)
        self._next_check = trio.current_time() + self._check_interval

    async def _probe(self, endpoint: Endpoint) -> None:
        try:
            with trio.fail_after(self._check_timeout):
                resp = await endpoint.transport.request(b"GET", HEALTH_PATH, [], b"")
        except (TransportError, trio.TooSlowError) as exc:
            self._mark_down(endpoint, exc if str(exc) else "health check timed out")
            return
        if resp.status < 500:
            self._mark_up(endpoint)
        else:
            self._mark_down(endpoint, f"health check: HTTP {resp.status}")

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.transport.aclose()
