"""A lean HTTP/1.1 server for the simulator: h11 directly over trio streams.

No framework on purpose: it must never be the bottleneck of a benchmark (a
hypercorn+framework server managed under 1,000 req/s here; this one is meant
for several thousand per core). Per connection: keep-alive, one request at a
time; plain requests (HTTP/1.1, Content-Length) are parsed by ``actors.http.framing``,
and from the first other one (chunked, Expect, HEAD, pipelined, malformed...)
an ``h11.Connection`` serves the rest of the connection. A malformed request
gets a 400 and the connection is closed; a body over ``max_body`` gets a 413.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import struct
from functools import partial
from http import HTTPStatus
from typing import final

import attrs
import h11
import structlog
import trio

from actors.http import framing as http1
from dispatcher.simulator import errors
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.exchange import SimRequest, SimResponse, error_response
from dispatcher.simulator.faults import InjectedFault

log = structlog.get_logger(__name__)

_RECEIVE_SIZE = 65_536
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class _BodyTooLarge(Exception):
    pass


async def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    idle_timeout: float = 120.0,
    max_body: int = 16 << 20,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim`` on ``host:port`` until cancelled.

    Calls ``task_status.started("http://HOST:PORT")`` with the bound port
    (useful with ``port=0``). Webhooks need ``sim.run()`` running too.
    """
    reaper = _IdleReaper(idle_timeout)
    handler = partial(_serve_connection, sim, reaper=reaper, max_body=max_body)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.run)
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, port, host=host)
        )
        bound = listeners[0].socket.getsockname()
        url_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        url = f"http://{url_host}:{bound[1]}"
        log.info("sim.serving", url=url)
        task_status.started(url)


@final
class _IdleReaper:
    """Closes connections that have waited for their next request ``idle_timeout`` or more.

    One task for the server rather than a cancel scope around each request read
    (~9% of the simulator's CPU): a connection notes when it starts waiting, and
    every quarter of the timeout the reaper closes the sockets of those waiting
    too long (so a connection goes between 1 and 1.25 timeouts idle). Closing
    wakes the connection's task with ``ClosedResourceError``.
    """

    def __init__(self, idle_timeout: float) -> None:
        self._timeout = idle_timeout
        self._waiting: dict[trio.SocketStream, float] = {}

    def waiting(self, stream: trio.SocketStream) -> None:
        self._waiting[stream] = trio.current_time()

    def done(self, stream: trio.SocketStream) -> None:
        self._waiting.pop(stream, None)

    async def run(self) -> None:
        while True:
            await trio.sleep(self._timeout / 4)
            now = trio.current_time()
            for stream, since in list(self._waiting.items()):
                if now - since >= self._timeout:
                    del self._waiting[stream]
                    stream.socket.close()


async def _serve_connection(
    sim: Simulator, stream: trio.SocketStream, *, reaper: _IdleReaper, max_body: int
) -> None:
    try:
        await _serve_requests(sim, stream, reaper, max_body)
    finally:
        reaper.done(stream)


async def _serve_requests(
    sim: Simulator, stream: trio.SocketStream, reaper: _IdleReaper, max_body: int
) -> None:
    # Plain requests are read and answered by ``actors.http.framing``; from the first one that
    # is not plain (or a pipelined one), h11 serves the connection to its end.
    conn: h11.Connection | None = None
    try:
        while True:
            req = None
            keep_alive = True
            reaper.waiting(stream)
            if conn is None:
                got = await _read_plain(stream, max_body)
                if isinstance(got, _HandOver):
                    conn = h11.Connection(h11.SERVER)
                    conn.receive_data(got.data)
                    if got.eof:
                        conn.receive_data(b"")
                elif got is not None:
                    req, keep_alive = got
            if conn is not None:
                req = await _read_request(conn, stream, max_body)
            reaper.done(stream)
            if req is None:  # the peer closed
                return
            try:
                resp = await sim.handle(req)
            except InjectedFault:
                _abort(stream)  # refused, reset or answer dropped: the client sees a dead connection
                return
            except Exception as exc:
                log.error("sim.handler_crashed", target=req.target, exc_info=exc)
                resp = error_response(errors.ApiError(500, errors.INTERNAL_ERROR, type(exc).__name__))
            if conn is None:
                await _send_all(stream, _encode_plain(resp, close=not keep_alive))
                if not keep_alive:
                    return
                continue
            await stream.send_all(_encode_response(conn, resp, head=req.method == "HEAD"))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn is not None:
            await _send_error(conn, stream, exc.error_status_hint, str(exc))
    except _BodyTooLarge:
        if conn is not None:
            await _send_error(conn, stream, 413, f"Request body over {max_body} bytes")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    except Exception as exc:  # one connection's bug must not stop the server
        log.error("sim.connection_crashed", exc_info=exc)


@attrs.frozen
class _HandOver:
    """What came of a request that is not plain, for h11 to read from."""

    data: bytes
    eof: bool


async def _read_plain(stream: trio.SocketStream, max_body: int) -> tuple[SimRequest, bool] | _HandOver | None:
    """The next request if it is plain: ``(request, keep-alive)``; None if the peer closed first.

    Anything else is handed over to h11 with the bytes received: a head
    that is not plain or not whole in the first read, a body over ``max_body``,
    a body cut by EOF, or bytes past the body (a pipelined request).
    """
    data = await _receive(stream, wait=True)
    if not data:
        return None
    end = data.find(b"\r\n\r\n")
    head = _plain_head(data[:end]) if end >= 0 else None
    if head is None or head[3] > max_body:
        return _HandOver(data, eof=False)
    method, target, headers, length, keep_alive = head
    start = end + 4
    stop = start + length
    if len(data) < stop:
        buffer = bytearray(data)
        while len(buffer) < stop:
            more = await _receive(stream)
            if not more:
                return _HandOver(bytes(buffer), eof=True)
            buffer += more
        data = bytes(buffer)
    if len(data) > stop:
        return _HandOver(data, eof=False)
    return SimRequest(method=method, target=target, headers=dict(headers), body=data[start:stop]), keep_alive


@functools.lru_cache(maxsize=256)
def _plain_head(head: bytes) -> tuple[str, str, tuple[tuple[str, str], ...], int, bool] | None:
    """A plain request head, parsed and decoded, remembered: a client repeats the same head
    bytes (same target, headers and body length) request after request."""
    parsed = http1.parse_request_head(head, len(head))
    if parsed is None:
        return None
    method, target, headers, length, keep_alive = parsed
    decoded = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers)
    return method.decode("ascii"), target.decode("latin-1"), decoded, length, keep_alive


async def _receive(stream: trio.SocketStream, *, wait: bool = False) -> bytes:
    """The next bytes (b"" at EOF) read straight from the socket: trio's ``SocketStream``
    and socket wrappers were ~15% of the simulator's CPU. ``wait``: nothing is expected yet.

    The descriptor is read from the socket at each try: -1 once the idle reaper closed
    it (``os.read`` fails), never a number the kernel gave to a newer connection.

    Raises:
        trio.BrokenResourceError: connection reset, or closed by the idle reaper.
        trio.ClosedResourceError: closed by the idle reaper while waiting.
    """
    sock = stream.socket
    if wait:
        await trio.lowlevel.wait_readable(sock)
    while True:
        try:
            return os.read(sock.fileno(), _RECEIVE_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket receive failed: {exc!r}") from exc


async def _send_all(stream: trio.SocketStream, data: bytes) -> None:
    """Write ``data`` straight to the socket (see ``_receive``).

    Raises:
        trio.BrokenResourceError: the peer reset or closed the connection.
    """
    sock = stream.socket
    await trio.lowlevel.checkpoint_if_cancelled()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(sock.fileno(), view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket send failed: {exc!r}") from exc


def _encode_plain(resp: SimResponse, *, close: bool) -> bytes:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in resp.headers]
    return http1.encode_response(resp.status, _REASONS.get(resp.status, b""), headers, resp.body, close=close)


async def _read_request(conn: h11.Connection, stream: trio.SocketStream, max_body: int) -> SimRequest | None:
    """The next full request, or None if the peer closed between requests."""
    request: h11.Request | None = None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                await stream.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                )
            conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
        elif type(event) is h11.Request:
            request = event
            for name, value in event.headers:
                if name == b"content-length" and int(value) > max_body:
                    raise _BodyTooLarge
        elif type(event) is h11.Data:
            size += len(event.data)
            if size > max_body:
                raise _BodyTooLarge
            chunks.append(event.data)
        elif type(event) is h11.EndOfMessage:
            assert request is not None
            return SimRequest(
                method=request.method.decode("ascii"),
                target=request.target.decode("latin-1"),
                headers={name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers},
                body=b"".join(chunks),
            )
        elif type(event) is h11.ConnectionClosed:
            return None


def _abort(stream: trio.SocketStream) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed or unreachable peer would."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


def _encode_response(conn: h11.Connection, resp: SimResponse, *, head: bool) -> bytes:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in resp.headers]
    headers.append((b"content-length", str(len(resp.body)).encode()))
    reason = _REASONS.get(resp.status, b"")
    data = conn.send(h11.Response(status_code=resp.status, headers=headers, reason=reason)) or b""
    if resp.body and not head:
        data += conn.send(h11.Data(data=resp.body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


async def _send_error(conn: h11.Connection, stream: trio.SocketStream, status: int, details: str) -> None:
    """Answer a request we cannot serve, then let the connection close."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    code = errors.INVALID_REQUEST if status < 500 else errors.INTERNAL_ERROR
    headers = [("content-type", "application/json"), ("connection", "close")]
    resp = SimResponse(status, headers, errors.error_body(code, details))
    with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(_encode_response(conn, resp, head=False))
