"""Serve the front door: hypercorn's trio worker, with a cap on open connections.

hypercorn has no connection limit: every accepted socket gets a task and a file
descriptor until its client or a timeout ends it, so a flood of idle or slow
connections could take every descriptor the process has, and with them the ones
the actors need to reach WhatsApp. ``serve_frontdoor`` is hypercorn 0.18's
``trio.run.worker_serve`` for plain HTTP (TLS ends at the proxy in front) with
one change: its listener stops accepting while ``max_connections`` are open, so
further clients wait in the kernel's listen backlog (then are refused by it)
instead of each holding a task here.

Time and size limits, by hypercorn's options: a connection idle (or still
sending its request head) for ``keep_alive_timeout`` is closed; a request head
is at most ``h11_max_incomplete_size`` (16 KiB, hypercorn's default); an
HTTP/2 connection (h2c) carries one request at a time (``h2_max_concurrent_streams``);
``read_timeout`` stays unset, as it would bound every single read, idle
keep-alive waits included, which ``keep_alive_timeout`` already does. A request
body has its own total deadline in the routes (``body_timeout``, see
``fastlane`` and ``app``): hypercorn has none.

Several processes on one host (``wadispatch run --workers N``) share the listen
port with ``SO_REUSEPORT`` (``reuse_port``): the kernel spreads new connections
over them. Each also listens on a ``peer`` address of its own (never shared), where
the others forward the requests for the buckets it owns.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import final

import structlog
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from dispatcher.frontdoor import limits

log = structlog.get_logger()


@final
class ConnectionCap:
    """At most ``limit`` connections open at once, over every listener; counted for /metrics."""

    def __init__(self, limit: int = limits.MAX_CONNECTIONS) -> None:
        self.limit = limit
        self._slots = trio.Semaphore(limit)
        self.waited = 0  # accepts that had to wait for a free slot
        self._full_logged = False

    @property
    def open(self) -> int:
        return self.limit - self._slots.value

    async def acquire(self) -> None:
        if self._slots.value == 0:
            self.waited += 1
            if not self._full_logged:
                self._full_logged = True
                log.warning("frontdoor.connections_full", max_connections=self.limit)
        await self._slots.acquire()

    def release(self) -> None:
        self._slots.release()
        if self._full_logged and self._slots.value > self.limit // 10:
            self._full_logged = False  # the next time it fills up is news again


@final
class CappedListener(trio.abc.Listener[trio.SocketStream]):
    """A socket listener that accepts only while ``cap`` has a free slot.

    The handler of each accepted stream calls ``cap.release()`` once when it is done with it.
    """

    def __init__(self, inner: trio.SocketListener, cap: ConnectionCap) -> None:
        self._inner = inner
        self._cap = cap

    async def accept(self) -> trio.SocketStream:
        await self._cap.acquire()
        try:
            return await self._inner.accept()
        except BaseException:
            self._cap.release()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TCPServer(TCPServer):
    """hypercorn's connection, which lets go of its socket as soon as the client has closed it.

    When a client closes an idle keep-alive connection, hypercorn's read loop ends but the
    connection's idle timer keeps its task group (and the socket) open until
    ``keep_alive_timeout``: 75 s in which the closed connection still counts against
    ``max_connections``. Stopping the timer once reading has ended closes it at once.
    """

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


def hypercorn_config(host: str, port: int, *, graceful_timeout: float) -> HyperConfig:
    cfg = HyperConfig()
    cfg.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    cfg.graceful_timeout = graceful_timeout
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.keep_alive_timeout = limits.KEEP_ALIVE_TIMEOUT
    cfg.h2_max_concurrent_streams = limits.H2_MAX_STREAMS
    return cfg


def listen_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket (not listening yet); ``reuse_port``: shared with other processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_frontdoor(
    app: ASGIFramework,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    graceful_timeout: float = 5.0,
    cap: ConnectionCap | None = None,
    reuse_port: bool = False,
    peer: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; ``started()`` gets the bound URLs (real port):
    the listen address first, then the ``peer`` socket's (bound by the caller) if given.

    ``cap`` bounds the open connections (``limits.MAX_CONNECTIONS`` if not given), over both.
    ``reuse_port``: share the listen port with other processes (``SO_REUSEPORT``).
    """
    cap = cap or ConnectionCap()
    config = hypercorn_config(host, port, graceful_timeout=graceful_timeout)
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = [listen_socket(host, port, reuse_port=reuse_port)]
            if peer is not None:
                sockets.append(peer)
            listeners: list[CappedListener] = []
            binds: list[str] = []
            for sock in sockets:
                sock.listen(config.backlog)
                plain = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                listeners.append(CappedListener(plain, cap))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")

            async def serve_connection(stream: trio.SocketStream) -> None:
                state = ConnectionState(lifespan_state.copy())
                try:
                    # Annotated as an SSLStream, it serves plain streams too (hypercorn's worker passes them).
                    await _TCPServer(asgi, config, context, state, stream)  # type: ignore[arg-type]
                finally:
                    cap.release()

            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(
                        functools.partial(
                            trio.serve_listeners, serve_connection, listeners, handler_nursery=server_nursery
                        )
                    )
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
