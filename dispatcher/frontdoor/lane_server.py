"""The owner's end of the peer lane: forwarded requests straight into the front door's ASGI app.

A daemon forwarding a request to the owner of its bucket sends it over one lane
connection (``lane_client``) instead of a second HTTP request through hypercorn.
Here each ``LaneRequest`` becomes an ASGI ``http`` scope handed to the app behind
the forwarding layer (the fast lane, then quart), exactly as a local batch part
is: no HTTP parsing, no second request/response machinery. The app checks
everything it checks for any request (credentials, sizes, validation); a lane
request never reaches the forwarding layer, so it is never forwarded again.

Many requests run at once on one connection, at most ``max_in_flight``: past that
the connection is not read until one finishes (TCP pushes back on the sender).
Each answer is written as soon as it is ready (``lane_writer``: those ready together
in one send), whole (a body above ``max_response`` is replaced by a 502: such an answer cannot
cross the lane). A frame that is not a lane request (garbage, a length above
``max_request_bytes`` plus room for the head, a connection cut mid-frame, no
preface) closes that connection: nothing in it is trusted after that. At most
``max_connections`` are open at once (as the front door's ``ConnectionCap``): one
more waits in the listen backlog until one closes.

Shutting down: no new connection is accepted; a request arriving on an open one
is answered ``LaneRefused`` (the forwarder then says "nothing applied, retry"),
those running finish within ``graceful_timeout``, then the connections close.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Final, final
from urllib.parse import unquote

import attrs
import msgspec
import structlog
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveEvent, ASGISendEvent, ConnectionState, HTTPScope

from dispatcher.frontdoor import errors
from dispatcher.frontdoor.lane_wire import (
    HEAD_ALLOWANCE,
    PREFACE,
    FrameBuffer,
    FrameError,
    LaneRefused,
    LaneReply,
    LaneRequest,
    address_of,
    decode_request,
    frame,
    receive_frame,
)
from dispatcher.frontdoor.lane_writer import FrameWriter, Ticket
from dispatcher.frontdoor.server import CappedListener, ConnectionCap

log = structlog.get_logger()

MAX_IN_FLIGHT: Final = 256  # requests running at once per lane connection
MAX_CONNECTIONS: Final = 64  # lane connections open at once (one per peer daemon is the norm)
MAX_RESPONSE: Final = 64 << 20  # a forwarded media download is answered whole
PREFACE_TIMEOUT: Final = 10.0
SEND_TIMEOUT: Final = 30.0  # an answer not taken by the client in this long: its connection is closed
_JSON: Final = [(b"content-type", b"application/json")]


class _AnswerTooLarge(Exception):
    pass


@final
class _Capture:
    """An ASGI ``send`` keeping the answer whole, up to ``limit`` bytes of body."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self._size = 0

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            chunk = bytes(message.get("body", b""))
            self._size += len(chunk)
            if self._size > self._limit:
                raise _AnswerTooLarge
            self.chunks.append(chunk)


def _error_reply(request_id: int, status: int, code: int, message: str) -> LaneReply:
    body = msgspec.json.encode({"code": code, "message": message, "more_info": "", "status": status})
    return LaneReply(request_id, status, list(_JSON), body)


def _scope(request: LaneRequest, client: tuple[str, int], server: tuple[str, int]) -> HTTPScope | None:
    """The ASGI scope of ``request`` (None: its method or target is not what HTTP allows)."""
    if not request.method.isascii() or not request.method.isalpha():
        return None
    if not request.target.startswith(b"/") or not request.target.isascii():
        return None
    path, _, query = request.target.partition(b"?")
    scope: HTTPScope = {
        "type": "http",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "http_version": "1.1",
        "method": request.method.decode("ascii"),
        "scheme": "http",
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": request.headers,
        "client": client,
        "server": server,
        "state": ConnectionState({}),
        "extensions": {},
    }
    return scope


@attrs.frozen
class _Served:
    """What every connection of one lane shares: the app, the limits, and the closing signal."""

    app: ASGIFramework
    closing: trio.Event
    cap: ConnectionCap
    max_request_bytes: int
    max_in_flight: int
    max_response: int

    async def __call__(self, stream: trio.SocketStream) -> None:
        try:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await _Connection(stream, self).serve()
        finally:
            self.cap.release()


@final
class _Connection:
    """One lane connection: its requests read, run (bounded) and answered as they finish."""

    def __init__(self, stream: trio.SocketStream, served: _Served) -> None:
        self._stream = stream
        self._app = served.app
        self._closing = served.closing
        self._frames = FrameBuffer(served.max_request_bytes + HEAD_ALLOWANCE)
        self._slots = trio.Semaphore(served.max_in_flight)
        self._max_response = served.max_response
        self._writer = FrameWriter(stream, send_timeout=SEND_TIMEOUT)
        self._running = 0
        self._drained = trio.Event()  # set when the last running request finished
        self._gone = trio.Event()  # the connection ended: a running request's receive says disconnect
        self._client = _peer(stream.socket.getpeername())
        self._server = _peer(stream.socket.getsockname())

    async def serve(self) -> None:
        try:
            # The requests run in a nursery of their own: the client leaving does not cancel an
            # applied create halfway (its answer is dropped, as HTTP's would be).
            async with trio.open_nursery() as running:
                watch = trio.CancelScope()
                with trio.CancelScope() as reading:
                    running.start_soon(self._close_when_drained, reading, watch)
                    await self._read_requests(running)
                watch.cancel()
                self._gone.set()
        finally:
            self._gone.set()
            await self._stream.aclose()

    async def _read_requests(self, running: trio.Nursery) -> None:
        with trio.move_on_after(PREFACE_TIMEOUT) as preface_wait:
            preface = await self._receive_exactly(len(PREFACE))
        if preface_wait.cancelled_caught or preface != PREFACE:
            log.warning("lane.bad_preface", client=self._client[0])
            return
        try:
            while True:
                payload = await receive_frame(self._stream, self._frames)
                if payload is None:
                    return
                request = decode_request(payload)
                if self._closing.is_set():
                    await self._answer(LaneRefused(request.id, "closing"))
                    continue
                await self._slots.acquire()
                self._running += 1
                running.start_soon(self._run, request)
        except FrameError as exc:
            log.warning("lane.bad_frame", client=self._client[0], error=str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away; what runs finishes, unanswered

    async def _close_when_drained(self, reading: trio.CancelScope, watch: trio.CancelScope) -> None:
        """Shutting down: once no request runs, stop reading (the connection then closes)."""
        with watch:
            await self._closing.wait()
            while self._running:
                self._drained = trio.Event()
                await self._drained.wait()
            reading.cancel()

    async def _run(self, request: LaneRequest) -> None:
        try:
            await self._answer(await self._reply(request))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away: it will not read this answer
        finally:
            self._slots.release()
            self._running -= 1
            if not self._running:
                self._drained.set()

    async def _reply(self, request: LaneRequest) -> LaneReply:
        scope = _scope(request, self._client, self._server)
        if scope is None:
            return _error_reply(request.id, 400, 20400, "Bad request: not an HTTP method or target.")
        body_given = False

        async def receive() -> ASGIReceiveEvent:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await self._gone.wait()
            return {"type": "http.disconnect"}

        captured = _Capture(self._max_response)
        try:
            await self._app(scope, receive, captured.send)
        except _AnswerTooLarge:
            return _error_reply(
                request.id,
                502,
                20502,
                f"Bad gateway: the answer is above the lane's {self._max_response} bytes.",
            )
        except Exception as exc:
            error, request_id = errors.internal_error(
                errors.loggable_path(scope["path"]), scope["method"], exc
            )
            headers = list(_JSON) + errors.request_id_header(request_id)
            return LaneReply(request.id, error.status, headers, error.body())
        if captured.status is None:
            error, request_id = errors.internal_error(
                errors.loggable_path(scope["path"]), scope["method"], RuntimeError("the app sent no answer")
            )
            return LaneReply(request.id, error.status, list(_JSON), error.body())
        return LaneReply(request.id, captured.status, captured.headers, b"".join(captured.chunks))

    async def _answer(self, message: LaneReply | LaneRefused) -> None:
        await self._writer.write(Ticket(frame(message)))

    async def _receive_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = await self._stream.receive_some(size - len(data))
            if not chunk:
                break
            data += chunk
        return data


def _peer(address: object) -> tuple[str, int]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return ("", 0)


async def serve_lane(
    app: ASGIFramework,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    max_request_bytes: int,
    graceful_timeout: float = 5.0,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_response: int = MAX_RESPONSE,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve lane connections on ``sock`` (bound by the caller, not listening yet) until
    ``shutdown_trigger`` returns, then drain as the module's docstring says; ``started()`` gets
    the lane's address (``lane://host:port``, the real port)."""
    sock.listen(socket.SOMAXCONN)
    cap = ConnectionCap(max_connections)
    listener = CappedListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), cap)
    host, port = _peer(sock.getsockname())
    closing = trio.Event()
    handle = _Served(app, closing, cap, max_request_bytes, max_in_flight, max_response)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(
                functools.partial(trio.serve_listeners, handle, [listener], handler_nursery=connections)
            )
            task_status.started(address_of(host, port))
            await shutdown_trigger()
            accepting.cancel_scope.cancel()
        await listener.aclose()
        closing.set()
        connections.cancel_scope.deadline = trio.current_time() + graceful_timeout
