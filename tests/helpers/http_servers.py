"""Small HTTP/1.1 servers on 127.0.0.1 for the WhatsApp-side client tests.

Well-behaved servers speak h11 (``h11_handler``); misbehaving ones write
hand-made bytes (``raw_handler``) or run a handler of the test's own. Each
counts connections and requests, and ``Server.wait_for`` blocks until a
condition holds (no polling).
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio
import trio.testing

TEST_TIMEOUT = 10.0
"""A bound for one client-server exchange in these tests (real clock, 127.0.0.1)."""


@attrs.define
class Seen:
    """A request as the server received it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@attrs.frozen
class Reply:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    chunks: tuple[bytes, ...] = (b"ok",)
    close: bool = False  # announce "Connection: close", then close
    drop_after: bool = False  # close silently after the response (idle keep-alive closed by the server)
    reset_after: bool = False  # like drop_after, with a RST instead of a FIN


App = Callable[[Seen], Awaitable[Reply]]


@attrs.define(eq=False)
class Server:
    """Counts connections and requests; ``wait_for`` blocks until a condition holds (no polling)."""

    port: int = 0
    accepts: int = 0
    open_now: int = 0
    max_open: int = 0
    closed: int = 0
    requests: list[Seen] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Server], bool]) -> None:
        while not predicate(self):
            await self._changed.wait()

    @property
    def targets(self) -> list[bytes]:
        return [r.target for r in self.requests]


Handler = Callable[[trio.abc.Stream, Server], Awaitable[None]]


async def start_server(nursery: trio.Nursery, handler: Handler) -> Server:
    server = Server()

    async def on_connection(stream: trio.SocketStream) -> None:
        server.accepts += 1
        server.open_now += 1
        server.max_open = max(server.max_open, server.open_now)
        server.notify()
        try:
            await handler(stream, server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: expected in several tests
        finally:
            server.open_now -= 1
            server.closed += 1
            await trio.aclose_forcefully(stream)
            server.notify()

    listeners: list[trio.SocketListener] = await nursery.start(
        functools.partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1")
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server


async def read_request(stream: trio.abc.Stream, conn: h11.Connection) -> Seen | None:
    """Next request on ``conn``, or None on a clean EOF between requests."""
    seen: Seen | None = None
    body: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Request):
            seen = Seen(event.method, event.target, list(event.headers), b"")
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert seen is not None
            seen.body = b"".join(body)
            return seen
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:
            raise AssertionError(f"unexpected {event!r}")


def reset(stream: trio.abc.Stream) -> None:
    """Make the coming close send a RST (SO_LINGER 0)."""
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def h11_handler(app: App) -> Handler:
    """A keep-alive HTTP/1.1 server loop calling ``app`` per request."""

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            seen = await read_request(stream, conn)
            if seen is None:
                return
            server.requests.append(seen)
            server.notify()
            reply = await app(seen)
            headers = list(reply.headers)
            if reply.close:
                headers.append((b"connection", b"close"))
            if len(reply.chunks) == 1 and not any(k.lower() == b"content-length" for k, _ in headers):
                headers.append((b"content-length", b"%d" % len(reply.chunks[0])))
            out = [conn.send(h11.Response(status_code=reply.status, headers=headers))]
            if seen.method != b"HEAD":  # h11 refuses a body on a HEAD response
                out += [conn.send(h11.Data(data=c)) for c in reply.chunks if c]
            out.append(conn.send(h11.EndOfMessage()))
            await stream.send_all(b"".join(o for o in out if o))
            if reply.reset_after:
                reset(stream)
            if conn.our_state is h11.MUST_CLOSE or reply.drop_after or reply.reset_after:
                return
            conn.start_next_cycle()

    return handler


async def ok_app(seen: Seen) -> Reply:
    return Reply(chunks=(b"echo " + seen.target,))


def raw_handler(response: bytes, *, pieces: int = 0, linger: bool = False) -> Handler:
    """Read one request, write ``response`` verbatim (in ``pieces``-byte writes if set), then close.

    With ``linger`` the connection stays open (until the client closes it).
    """

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        seen = await read_request(stream, h11.Connection(h11.SERVER))
        assert seen is not None
        server.requests.append(seen)
        server.notify()
        if not pieces:
            await stream.send_all(response)
            if linger:
                assert await stream.receive_some() == b""
            return
        for i in range(0, len(response), pieces):
            await stream.send_all(response[i : i + pieces])
            await trio.testing.wait_all_tasks_blocked()  # the client is blocked reading again

    return handler


def url(server: Server, path: str = "") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


# -- misbehaving answers --------------------------------------------------------------------------

OFFERED = 1 << 30
"""What a flooding server sends at most, so a client that never refuses still ends."""


async def send_flood(stream: trio.abc.Stream, head: bytes, unit: bytes, sent: list[int]) -> None:
    """Send ``head``, then ``unit`` again and again until the client hangs up (or ``OFFERED``
    bytes went out); the bytes sent are appended to ``sent`` whatever happens."""
    total = 0
    try:
        await stream.send_all(head)
        total = len(head)
        while total < OFFERED:
            await stream.send_all(unit)
            total += len(unit)
    finally:
        sent.append(total)


async def wait_for_close(stream: trio.abc.Stream) -> None:
    """Read and drop whatever comes until the client closes."""
    while await stream.receive_some():
        pass


async def send_drip(stream: trio.abc.Stream, head: bytes, unit: bytes) -> None:
    """Send ``head``, then ``unit`` each time the client is blocked reading again: a slow drip
    that never ends and never pauses long enough to trip an idle timer."""
    await stream.send_all(head)
    while True:
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(unit)
