"""The hot-path HTTP/1.1 client: a keep-alive connection pool on h11 over trio streams.

One ``H11Pool`` per endpoint (base URL); every message of a number goes through
it, so its per-request cost is the delivery ceiling. It does the minimum:
prebuilt header prefix, one ``h11.Connection`` per socket recycled with
``start_next_cycle()``, no dicts or logging per request, no background task.

Pool discipline:
    * at most ``max_connections`` sockets open (idle + busy + connecting);
    * idle connections are reused LIFO (the warmest socket first); one that is
      readable while idle (EOF, reset, a stray 408) or older than
      ``idle_timeout`` is closed on the way and replaced;
    * callers beyond the limit wait FIFO; a finishing request hands its
      connection (or, if it dropped it, its slot) straight to the first waiter,
      so there is no polling and no stealing. The wait counts against
      ``request_timeout``; if the deadline passes while still waiting the
      request never left, so ``PoolTimeout`` (a ``ConnectError``) is raised;
    * expired idle sockets are closed lazily, on the next request that meets them.

Failure mapping (see ``actors/transport.py``):
    * waiting, DNS, connect, TLS handshake, connect timeout -> ``ConnectError``;
    * deadline once the request is being written or awaits its response -> ``RequestTimeout``;
    * reset / EOF / garbage once the request was (partly) written -> ``ResponseLostError``
      (a failed write on a fresh connection too: part of it may have gone out);
    * a body above ``max_response_body`` (its Content-Length says so, or the count of a
      chunked or EOF-delimited body passes it) -> ``ResponseTooLargeError``, the connection
      closed: no response is buffered beyond the limit, whatever the server sends.

Retry: exactly once, and only for the keep-alive race: the write of the request
to a connection that had been idle (it already carried a response) fails. A
failed write means the server cannot have received a complete request, so a
fresh connection is opened and the request rewritten. Nothing is ever retried
once the request was fully written.

Cancellation: a request cancelled (or timed out) anywhere after it got a
connection closes that connection, whose state is unknown, and frees its slot.

Deadlines: a request that finds a warm idle connection (the common case) runs
without a cancel scope, whose enter and exit were ~8% of the daemon's CPU in
delivery: it sets the connection's ``deadline`` and a per-pool sweeper (a trio
system task, running only while such requests are in flight) closes the
connection when it passes, which the request reports as ``RequestTimeout``.
Requests that wait for a slot or connect run under a ``CancelScope`` as before.
"""

from __future__ import annotations

import collections
import math
import ssl
import urllib.parse
from collections.abc import Iterable
from typing import final

import attrs
import h11
import outcome
import trio

from actors.http.connection import BodyTooLargeError, H11Connection, PeerClosedError, Prepared
from actors.http.stream import open_stream
from actors.transport import (
    BodyStream,
    ConnectError,
    Headers,
    RequestTimeout,
    Response,
    ResponseLostError,
    ResponseTooLargeError,
)

__all__ = ["DEFAULT_MAX_RESPONSE_BODY", "H11Pool", "PoolStatistics", "PoolTimeout"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# API answers are small JSON documents (a send answer is ~150 bytes, an error ~400, a login ~300):
# 1 MiB is thousands of times that, and bounds what one answer can make the process hold.
DEFAULT_MAX_RESPONSE_BODY = 1 << 20
# Distinct request shapes kept prepared (a number sends one; a new token makes another).
_PREPARED_MAX = 64

# Request phases, for the failure mapping.
_WAIT, _CONNECT, _WRITE, _READ = range(4)

# Exceptions that mean "the connection broke" once the request started.
_BROKEN = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    h11.RemoteProtocolError,
    PeerClosedError,
)


class PoolTimeout(ConnectError):
    """The request timed out while waiting for (or opening) a connection: it never left."""


@attrs.frozen
class PoolStatistics:
    """A snapshot of an ``H11Pool``."""

    open_connections: int
    """Sockets open or being opened (idle + active); never above ``max_connections``."""
    idle_connections: int
    """Open sockets waiting for a request."""
    active_connections: int
    """Sockets carrying a request (or being connected for one)."""
    waiting_requests: int
    """Requests queued for a connection."""
    requests_total: int
    """Requests started since the pool was created."""
    connections_opened: int
    """Successful connects since the pool was created."""
    reconnects: int
    """Connects that replaced a connection dropped because the peer closed it or it broke."""
    retries: int
    """Requests transparently rewritten after the keep-alive race."""


@final
class H11Pool:
    """Keep-alive HTTP/1.1 pool for one endpoint; implements ``actors.transport.Transport``.

    Args:
        base_url: ``http://host[:port][/prefix]`` or ``https://...``; the path
            prefix is prepended to every request target.
        max_connections: sockets open at most; callers beyond wait FIFO.
        connect_timeout: seconds for DNS + TCP connect + TLS handshake.
        request_timeout: seconds for the whole request, queueing included.
        idle_timeout: an idle socket older than this is closed instead of reused.
        ssl_context: for https; ``ssl.create_default_context()`` when None.
        default_headers: sent with every request, after ``Host``. Callers must
            not pass ``Host`` or ``Content-Length``: the pool sets them.
        max_response_body: bytes of response body accepted at most (see the failure mapping).
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 16,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        default_headers: Iterable[tuple[bytes, bytes]] = (),
        max_response_body: int = DEFAULT_MAX_RESPONSE_BODY,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in _DEFAULT_PORTS or not url.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/prefix], got {base_url!r}")
        if url.query or url.fragment:
            raise ValueError(f"base_url must not have a query or fragment, got {base_url!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if max_response_body < 0:
            raise ValueError(f"max_response_body must be >= 0, got {max_response_body}")
        self._base_url = base_url
        self._scheme = url.scheme
        self._host = url.hostname
        self._port = url.port or _DEFAULT_PORTS[url.scheme]
        if url.scheme == "https":
            self._ssl_context: ssl.SSLContext | None = ssl_context or ssl.create_default_context()
        else:
            self._ssl_context = None
        host = f"[{self._host}]" if ":" in self._host else self._host
        if url.port is not None and url.port != _DEFAULT_PORTS[url.scheme]:
            host = f"{host}:{url.port}"
        self._prefix = url.path.rstrip("/").encode("ascii")
        self._head: Headers = [(b"host", host.encode("ascii")), *default_headers]
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._idle_timeout = idle_timeout
        self._max_body = max_response_body
        self._prepared: dict[tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]], Prepared] = {}

        self._idle: list[H11Connection] = []  # LIFO: pop() is the most recently used
        self._busy: set[H11Connection] = set()  # carrying a request, for aclose()
        # Made by the first caller that has to wait: most pools never queue (an idle number's never).
        self._waiters: collections.deque[trio.lowlevel.Task] | None = None
        self._open = 0  # slots taken: idle + busy + connecting
        self._dropped = 0  # connections dropped not yet replaced (for the reconnects figure)
        self._closed = False
        self._sweeping = False  # the deadline sweeper (a system task) is running
        self._requests_total = 0
        self._connections_opened = 0
        self._reconnects = 0
        self._retries = 0

    # -- Transport API ---------------------------------------------------------------------------

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        """Send one request and read the full response.

        ``target`` is the path (and query) below the base URL, starting with ``/``.

        Raises:
            ConnectError: the request never left (``PoolTimeout`` if the deadline passed first).
            RequestTimeout: no complete response within ``request_timeout``.
            ResponseLostError: the connection broke after the request was (partly) written.
            ResponseTooLargeError: the response body is above ``max_response_body``.
            ValueError: invalid method, target or headers (nothing was sent).
        """
        if self._closed:
            raise ConnectError(f"{self!r} is closed")
        self._requests_total += 1
        prepared = self._prepared.get((method, target, tuple(headers)))
        if prepared is None:
            prepared = self._prepare(method, target, headers)
        now = trio.current_time()
        due = now + self._request_timeout
        conn = self._take_idle(now) if self._idle else None
        if conn is None:
            return await self._request_scoped(prepared, body, due, have_slot=False)
        # The common case, a warm connection: no cancel scope (~8% of the daemon's CPU in
        # delivery); the deadline sweeper closes the connection if ``due`` passes.
        conn.deadline = due
        if not self._sweeping:
            self._sweeping = True
            trio.lowlevel.spawn_system_task(self._sweep, name=f"H11Pool deadlines {self._base_url}")
        try:
            try:
                buffers = conn.encode_request(prepared, body)
            except h11.LocalProtocolError as exc:
                raise ValueError(f"invalid request: {exc}") from exc
            try:
                await conn.send(buffers)
            except trio.BrokenResourceError:
                if conn.timed_out:
                    raise
                # The keep-alive race (see the module docstring): rewrite on a new connection.
                self._drop(conn, by_peer=True)
                self._retries += 1
                return await self._request_scoped(prepared, body, due, have_slot=True)
            response = await conn.receive_response(self._max_body)
        except BaseException as exc:
            conn.deadline = math.inf
            self._drop(conn, by_peer=isinstance(exc, _BROKEN) and not conn.timed_out)
            self._release_slot()
            if isinstance(exc, BodyTooLargeError):
                raise self._too_large(exc) from exc
            if isinstance(exc, _BROKEN):
                if conn.timed_out:
                    raise RequestTimeout(
                        f"no response from {self._base_url} within {self._request_timeout}s"
                    ) from exc
                raise ResponseLostError(f"connection to {self._base_url} broke: {exc!r}") from exc
            raise
        conn.deadline = math.inf
        self._finish(conn)
        return response

    async def _request_scoped(
        self, prepared: Prepared, body: bytes, due: float, *, have_slot: bool
    ) -> Response:
        """``request`` under a cancel scope: when it must wait for a slot or connect first.

        ``have_slot``: the caller holds a slot without a connection (the keep-alive
        race: the request is rewritten on a new connection).
        """
        phase = _WAIT
        conn: H11Connection | None = None
        # A bare CancelScope rather than trio.fail_after, which wraps one in a generator
        # context manager: 2-4 us less per request here (the scope itself is most of the rest).
        deadline = trio.CancelScope(deadline=due)
        try:
            with deadline:
                conn = None if have_slot else await self._checkout()
                try:
                    if self._closed:
                        raise trio.ClosedResourceError("pool closed")
                    reused = True
                    if conn is None:
                        phase, reused = _CONNECT, False
                        conn = await self._connect()
                    try:
                        buffers = conn.encode_request(prepared, body)
                    except h11.LocalProtocolError as exc:
                        raise ValueError(f"invalid request: {exc}") from exc
                    phase = _WRITE
                    try:
                        await conn.send(buffers)
                    except trio.BrokenResourceError:
                        if not reused:
                            raise
                        # The keep-alive race: the server closed this idle connection
                        # as we wrote to it. It cannot have a complete request.
                        self._drop(conn, by_peer=True)
                        conn = None
                        self._retries += 1
                        phase = _CONNECT
                        conn = await self._connect()
                        buffers = conn.encode_request(prepared, body)
                        phase = _WRITE
                        await conn.send(buffers)
                    phase = _READ
                    response = await conn.receive_response(self._max_body)
                except BaseException as exc:
                    if conn is not None:  # its state is unknown: never reuse it
                        self._drop(conn, by_peer=isinstance(exc, _BROKEN))
                    self._release_slot()
                    raise
            if deadline.cancelled_caught:
                raise trio.TooSlowError
        except trio.TooSlowError as exc:
            if phase <= _CONNECT:
                raise PoolTimeout(
                    f"no connection to {self._base_url} within {self._request_timeout}s"
                ) from exc
            raise RequestTimeout(
                f"no response from {self._base_url} within {self._request_timeout}s"
            ) from exc
        except _BROKEN as exc:
            if phase <= _CONNECT:
                raise ConnectError(f"cannot connect to {self._base_url}: {exc!r}") from exc
            raise ResponseLostError(f"connection to {self._base_url} broke: {exc!r}") from exc
        except BodyTooLargeError as exc:
            raise self._too_large(exc) from exc
        assert conn is not None  # the scope swallows only its own cancellation, raised above
        self._finish(conn)
        return response

    def _too_large(self, exc: BodyTooLargeError) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"answer from {self._base_url} refused: {exc}", limit=exc.limit, announced=exc.announced
        )

    def _finish(self, conn: H11Connection) -> None:
        """A complete exchange: keep the connection for the next request, or drop it."""
        if conn.finish_cycle() and not self._closed:
            self._checkin(conn)
        else:  # Connection: close, HTTP/1.0, body delimited by EOF, or we are closing
            self._drop(conn, by_peer=not self._closed)
            self._release_slot()

    async def _sweep(self) -> None:
        """Close each busy connection whose request passed its ``deadline`` (a system task).

        Runs while requests without a cancel scope are in flight: it sleeps until the
        earliest deadline, and ends when none is left. Requests start with a deadline
        ``request_timeout`` after now, so a new one is never due before the one it
        sleeps for. Closing wakes the request (``ClosedResourceError``), which reads
        ``timed_out`` and raises ``RequestTimeout``.
        """
        try:
            while not self._closed:
                now = trio.current_time()
                due = math.inf
                for conn in list(self._busy):
                    if conn.deadline <= now:
                        conn.timed_out = True
                        conn.close()
                    elif conn.deadline < due:
                        due = conn.deadline
                if due == math.inf:
                    return
                await trio.sleep_until(due)
        finally:
            self._sweeping = False

    async def aclose(self) -> None:
        """Close every connection; in-flight requests fail with ``TransportError``, waiters
        and later requests with ``ConnectError``.

        A connect already under way is not interrupted: it fails with ``ConnectError``
        once it completes (or times out). Idempotent.
        """
        self._closed = True
        for conn in self._idle:
            conn.close()
        for conn in self._busy:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()
        while self._waiters:
            error = ConnectError(f"{self!r} closed while waiting for a connection")
            trio.lowlevel.reschedule(self._waiters.popleft(), outcome.Error(error))
        await trio.lowlevel.checkpoint()

    async def stream(
        self, method: bytes, target: bytes, headers: Headers, *, limit: int, deadline: float
    ) -> BodyStream:
        """A download on a connection of its own (``actors.http.stream``), outside the pool's slots
        so a long one never holds a send's connection; see ``StreamingTransport.stream``."""
        if self._closed:
            raise ConnectError(f"{self!r} is closed")
        return await open_stream(
            self._host,
            self._port,
            self._ssl_context,
            method=method,
            target=self._prefix + target,
            headers=[*self._head, *headers],
            limit=limit,
            deadline=deadline,
            where=self._base_url,
        )

    async def stream_url(
        self, url: str, headers: Headers, *, limit: int, deadline: float, hosts: tuple[str, ...]
    ) -> BodyStream:
        """GET an absolute ``url`` an answer of this endpoint named (a media location), streamed:
        on this endpoint's own origin, or over https on a host ending with one of ``hosts``.

        Raises:
            ConnectError: any other URL (refused unsent: the caller's token would go with it).
            TransportError: as ``stream``.
        """
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
            target = ((parts.path or "/") + (f"?{parts.query}" if parts.query else "")).encode("ascii")
        except (ValueError, UnicodeEncodeError) as exc:
            raise ConnectError(f"refusing to fetch an unusable URL: {exc}") from exc
        host = parts.hostname or ""
        if (parts.scheme, host, port) == (self._scheme, self._host, self._port):
            ssl_context, head = self._ssl_context, self._head
        elif parts.scheme == "https" and host.endswith(hosts) and hosts:
            ssl_context = self._ssl_context or ssl.create_default_context()
            head = [
                (b"host", host.encode("ascii") if port == 443 else b"%s:%d" % (host.encode("ascii"), port))
            ]
        else:
            raise ConnectError(
                f"refusing to fetch from {parts.scheme}://{host}: not this endpoint nor a media host"
            )
        return await open_stream(
            host,
            port,
            ssl_context,
            method=b"GET",
            target=target,
            headers=[*head, *headers],
            limit=limit,
            deadline=deadline,
            where=f"{parts.scheme}://{host}",
        )

    # -- introspection ---------------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        idle = len(self._idle)
        return PoolStatistics(
            open_connections=self._open,
            idle_connections=idle,
            active_connections=self._open - idle,
            waiting_requests=len(self._waiters) if self._waiters else 0,
            requests_total=self._requests_total,
            connections_opened=self._connections_opened,
            reconnects=self._reconnects,
            retries=self._retries,
        )

    def __repr__(self) -> str:
        idle = len(self._idle)
        state = " closed" if self._closed else ""
        waiting = len(self._waiters) if self._waiters else 0
        return (
            f"<H11Pool {self._base_url}{state} [Requests: {self._open - idle} active, "
            f"{waiting} waiting, {self._requests_total} total | Connections: {self._open} open, "
            f"{idle} idle, max {self._max_connections}, {self._reconnects} reconnects]>"
        )

    def _prepare(self, method: bytes, target: bytes, headers: Headers) -> Prepared:
        """Prepare (validate and pre-encode) a request shape not seen yet, and keep it.

        Raises:
            ValueError: h11 would refuse the request.
        """
        prepared = Prepared.of(method, self._prefix + target, [*self._head, *headers])
        if len(self._prepared) >= _PREPARED_MAX:
            self._prepared.clear()
        self._prepared[method, target, tuple(headers)] = prepared
        return prepared

    # -- slots and connections ------------------------------------------------------------------

    async def _checkout(self) -> H11Connection | None:
        """Take a slot: a usable idle connection, or None meaning "connect one".

        Waits FIFO when every slot is taken. The fast path does not checkpoint:
        the caller writes to the socket next, which does.
        """
        if self._idle:
            conn = self._take_idle(trio.current_time())
            if conn is not None:
                return conn
        if self._open < self._max_connections:
            self._open += 1
            return None
        task = trio.lowlevel.current_task()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = collections.deque()
        waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        granted: H11Connection | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return granted

    def _take_idle(self, now: float) -> H11Connection | None:
        """A usable idle connection, made busy; None if there is none (its slot is free then).

        Idle connections are tried warmest first; one too old or readable is closed on the way.
        """
        idle = self._idle
        while idle:
            conn = idle.pop()
            if now - conn.idle_since >= self._idle_timeout:
                conn.close()  # too old: the server may be about to close it
            elif conn.is_readable():
                conn.close()  # EOF, reset or a stray response: the server is done with it
                self._dropped += 1
            else:
                self._busy.add(conn)
                return conn
            self._open -= 1
        return None

    async def _connect(self) -> H11Connection:
        """Open a connection for a slot the caller holds."""
        try:
            with trio.fail_after(self._connect_timeout):
                conn = await H11Connection.open(self._host, self._port, self._ssl_context, self._host)
        except trio.TooSlowError as exc:
            raise ConnectError(f"cannot connect to {self._base_url} within {self._connect_timeout}s") from exc
        if self._closed:
            conn.close()
            raise trio.ClosedResourceError("pool closed while connecting")
        self._busy.add(conn)
        self._connections_opened += 1
        if self._dropped:
            self._dropped -= 1
            self._reconnects += 1
        return conn

    def _checkin(self, conn: H11Connection) -> None:
        """A finished request returns a reusable connection: to the first waiter, else idle."""
        if self._waiters:
            trio.lowlevel.reschedule(self._waiters.popleft(), outcome.Value(conn))
            return
        self._busy.discard(conn)
        idle = self._idle
        now = trio.current_time()
        conn.idle_since = now
        # LIFO leaves the coldest socket at the bottom: expire it here, one per check-in.
        if idle and now - idle[0].idle_since >= self._idle_timeout:
            idle.pop(0).close()
            self._open -= 1
        idle.append(conn)

    def _drop(self, conn: H11Connection, *, by_peer: bool) -> None:
        """Close a busy connection; the caller still holds its slot."""
        conn.close()
        self._busy.discard(conn)
        if by_peer:
            self._dropped += 1

    def _release_slot(self) -> None:
        """A request dropped its connection (or never got one): pass the slot on."""
        if self._waiters and not self._closed:
            trio.lowlevel.reschedule(self._waiters.popleft(), outcome.Value(None))
        else:
            self._open -= 1
