"""One HTTP/1.1 client connection over a trio stream (TCP, optionally TLS).

The plain exchange (a prepared request, an ``HTTP/1.1`` answer with a
Content-Length) is framed and parsed by ``actors.http.framing``; every other one is
run through an ``h11.Connection`` made for that cycle, which an unusual
response joins mid-way (the request is replayed into it, unsent).

``H11Connection`` knows nothing about pooling, retries or the transport error
tree: it raises trio / ``OSError`` / ``ssl`` / h11 exceptions as they come, and
``H11Pool`` (``actors/http/pool.py``) decides what each one means for the caller.

Closing is synchronous (``close()`` closes the socket; trio wakes any task
blocked on it with ``ClosedResourceError``), so it is safe to call from
``except BaseException`` cleanups and from a cancelled task without awaiting.
A dropped TLS connection gets no ``close_notify``; peers tolerate that and the
pool opens its TLS streams with ``https_compatible=True`` for the same reason.
"""

from __future__ import annotations

import math
import os
import select
import ssl
from typing import final

import attrs
import h11
import trio

from actors.http.framing import parse_response_head, request_head
from actors.transport import Headers, Response

__all__ = ["NO_BODY_METHODS", "BodyTooLargeError", "H11Connection", "PeerClosedError", "Prepared", "connect"]

# Methods whose empty body is sent without a Content-Length header.
NO_BODY_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})

_RECEIVE_SIZE = 65536
# Bodies above this are written as a separate buffer rather than copied into
# the head: one extra syscall is cheaper than a large memcpy.
_COALESCE_LIMIT = 16384


class PeerClosedError(Exception):
    """The peer closed the connection before the response was complete."""


class BodyTooLargeError(Exception):
    """The response body is above the caller's limit: announced by Content-Length (``announced``),
    or counted past it while it came in chunked or delimited by EOF (``announced`` None).
    Nothing past the limit was kept; the connection must be closed."""

    def __init__(self, limit: int, announced: int | None) -> None:
        size = f"Content-Length {announced}" if announced is not None else "a streamed body"
        super().__init__(f"{size} above the {limit}-byte response limit")
        self.limit = limit
        self.announced = announced


@attrs.frozen
class Prepared:
    """A request's constant part (all but Content-Length and the body), prepared once per shape."""

    method: bytes
    target: bytes
    headers: Headers
    """Every header but Content-Length (Host first)."""
    wire: bytes | None
    """Request line and headers as sent, or None: this request goes through h11."""

    @classmethod
    def of(cls, method: bytes, target: bytes, headers: Headers) -> Prepared:
        """Raises ValueError if h11 would refuse the request."""
        return cls(method, target, headers, request_head(method, target, headers))


async def connect(
    host: str, port: int, ssl_context: ssl.SSLContext | None, server_hostname: str | None
) -> tuple[trio.abc.Stream, trio.socket.SocketType]:
    """A connected stream (TLS with its handshake done when ``ssl_context`` is given) and its socket.

    Raises:
        OSError: DNS failure, connection refused, unreachable...
        trio.BrokenResourceError: the TLS handshake failed (``__cause__`` is the ``ssl.SSLError``).
    """
    tcp = await trio.open_tcp_stream(host, port)
    sock = tcp.socket
    if ssl_context is None:
        return tcp, sock
    try:
        tls = trio.SSLStream(tcp, ssl_context, server_hostname=server_hostname, https_compatible=True)
        await tls.do_handshake()
    except BaseException:
        sock.close()
        raise
    return tls, sock


@final
class H11Connection:
    """A connected socket plus its h11 state machine; one request at a time.

    Attributes:
        idle_since: ``trio.current_time()`` when the connection last went idle.
        deadline: when the request it carries times out, if its pool enforces that by
            closing it (``inf`` otherwise).
        timed_out: its pool closed it because ``deadline`` passed.
        requests: requests written on this connection so far (>0 means "reused").
    """

    __slots__ = (
        "_body",
        "_closed",
        "_fd",
        "_h11",
        "_keep_alive",
        "_poll",
        "_request",
        "_sock",
        "_stream",
        "deadline",
        "idle_since",
        "requests",
        "timed_out",
    )

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType, *, raw: bool = False) -> None:
        """``raw``: ``stream`` is the plain TCP stream of ``sock``, which is then read and written
        directly (``os.read``/``os.write`` and trio's ``wait_readable``/``wait_writable``)."""
        self._stream = stream
        self._sock = sock
        # Plain TCP skips SocketStream and trio's socket wrappers (a conflict detector, an
        # error-translating context manager and two checkpoints per call): -1 for TLS.
        self._fd = sock.fileno() if raw else -1
        self._closed = False
        # This cycle's h11 state machine; None while the request is framed by ``actors.http.framing``.
        self._h11: h11.Connection | None = None
        self._request: Prepared | None = None  # the request of this cycle, for an h11 replay
        self._body = b""
        self._keep_alive = False
        # One poll object per connection, registered once: the idle check is a
        # single poll(2) call.
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self.idle_since = 0.0
        self.deadline = math.inf  # of the request it carries, when its pool watches it (no cancel scope)
        self.timed_out = False  # closed by its pool because that deadline passed
        self.requests = 0

    @classmethod
    async def open(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None, server_hostname: str | None
    ) -> H11Connection:
        """Connect (and complete the TLS handshake when ``ssl_context`` is given).

        Raises:
            OSError: DNS failure, connection refused, unreachable...
            trio.BrokenResourceError: the TLS handshake failed (``__cause__`` is the ``ssl.SSLError``).
        """
        stream, sock = await connect(host, port, ssl_context, server_hostname)
        return cls(stream, sock, raw=ssl_context is None)

    def __repr__(self) -> str:
        try:
            peer = self._sock.getpeername()
        except OSError:
            peer = "closed"
        mode = "fast" if self._h11 is None else f"h11 {self._h11.our_state.__name__}"
        return f"<H11Connection {peer} requests={self.requests} {mode}>"

    def encode_request(self, request: Prepared, body: bytes) -> list[bytes]:
        """The bytes to write for ``request`` with ``body`` (one or two buffers).

        A request with wire bytes is framed here; any other goes through a fresh
        ``h11.Connection``, which then also reads the response.

        Raises:
            h11.LocalProtocolError: h11 refused the request (nothing was written).
        """
        self._request = request
        self._body = body
        sized = bool(body) or request.method not in NO_BODY_METHODS
        if request.wire is None:
            self._h11 = h11.Connection(h11.CLIENT)
            return self._encode_h11(request, body, sized=sized)
        self._h11 = None
        head = request.wire + (b"content-length: %d\r\n\r\n" % len(body) if sized else b"\r\n")
        if not body:
            return [head]
        if len(body) <= _COALESCE_LIMIT:
            return [head + body]
        return [head, body]

    def _encode_h11(self, request: Prepared, body: bytes, *, sized: bool) -> list[bytes]:
        """Run the request through this cycle's h11 state machine."""
        conn = self._h11
        assert conn is not None
        headers = [*request.headers, (b"content-length", b"%d" % len(body))] if sized else request.headers
        head = conn.send(h11.Request(method=request.method, target=request.target, headers=headers))
        assert head is not None
        if not body:
            tail = conn.send(h11.EndOfMessage())
            assert tail is not None
            return [head + tail] if tail else [head]
        parts = conn.send_with_data_passthrough(h11.Data(data=body))
        tail = conn.send(h11.EndOfMessage())
        assert parts is not None
        assert tail is not None
        if len(body) <= _COALESCE_LIMIT:
            return [b"".join([head, *parts, tail])]
        return [head, b"".join([*parts, tail])]

    async def send(self, buffers: list[bytes]) -> None:
        """Write the encoded request.

        Raises:
            trio.BrokenResourceError: the peer reset or closed the connection.
            trio.ClosedResourceError: the connection was closed locally (pool shutting down).
        """
        self.requests += 1
        if self._fd < 0:
            for buf in buffers:
                await self._stream.send_all(buf)
            return
        await trio.lowlevel.checkpoint_if_cancelled()  # as send_all: nothing leaves once cancelled
        for buf in buffers:
            view = memoryview(buf)
            while view:
                if self._closed:
                    raise trio.ClosedResourceError("connection closed")
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self._fd)
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket send failed: {exc!r}") from exc

    async def _receive(self, *, wait: bool = False) -> bytes:
        """The next bytes from the peer (b"" at EOF); ``wait``: the peer has not answered yet.

        Raises:
            trio.BrokenResourceError: connection reset.
            trio.ClosedResourceError: closed locally.
        """
        if self._fd < 0:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
            return data if type(data) is bytes else bytes(data)
        if wait:  # a read now would only find nothing: sleep until there is something
            await trio.lowlevel.wait_readable(self._fd)
        while True:
            if self._closed:
                raise trio.ClosedResourceError("connection closed")
            try:
                return os.read(self._fd, _RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket receive failed: {exc!r}") from exc

    async def receive_response(self, limit: int) -> Response:
        """Read one full response, skipping 1xx; header names come back lowercased.

        The plain case (the whole head in the first read, ``HTTP/1.1``,
        Content-Length) is parsed by ``actors.http.framing``; anything else is replayed
        into h11 and read there. A body above ``limit`` bytes is refused: on its
        Content-Length before any more is read, else as soon as the count passes it.

        Raises:
            BodyTooLargeError: the body is above ``limit`` (the connection must be closed).
            PeerClosedError: EOF before the end of the response.
            h11.RemoteProtocolError: the peer sent something that is not HTTP/1.1.
            trio.BrokenResourceError: connection reset.
            trio.ClosedResourceError: closed locally.
        """
        if self._h11 is not None:
            return await self._receive_h11(limit)
        data = await self._receive(wait=True)
        if not data:
            raise PeerClosedError("connection closed before the response")
        end = data.find(b"\r\n\r\n")
        head = parse_response_head(data, end) if end >= 0 else None
        if head is None:
            return await self._fall_back(data, limit)
        status, headers, length, keep_alive = head
        if length > limit:
            raise BodyTooLargeError(limit, length)
        start = end + 4
        stop = start + length
        if len(data) >= stop:
            self._keep_alive = keep_alive and len(data) == stop  # nothing may follow unasked
            return Response(status, headers, data[start:stop])
        chunks = [data[start:]]
        have = len(data) - start
        while have < length:
            received = await self._receive()
            if not received:
                raise PeerClosedError("connection closed mid-response (Data)")
            chunks.append(received)
            have += len(received)
        self._keep_alive = keep_alive and have == length
        return Response(status, headers, b"".join(chunks)[:length])

    async def _fall_back(self, received: bytes, limit: int) -> Response:
        """Hand an unusual response to h11: replay our request into it, then feed what came."""
        self._h11 = h11.Connection(h11.CLIENT)
        request, body = self._request, self._body
        assert request is not None
        self._encode_h11(request, body, sized=bool(body) or request.method not in NO_BODY_METHODS)
        self._h11.receive_data(received)
        return await self._receive_h11(limit)

    async def _receive_h11(self, limit: int) -> Response:
        conn = self._h11
        assert conn is not None
        status = 0
        headers: Headers = []
        chunks: list[bytes] = []
        size = 0  # body bytes so far (h11 holds at most one receive beyond them)
        while True:
            event = conn.next_event()
            kind = type(event)
            if event is h11.NEED_DATA:
                data = await self._receive()
                if not data and conn.their_state is h11.SEND_RESPONSE:
                    # h11 reports EOF before the status line as ConnectionClosed; be explicit.
                    raise PeerClosedError("connection closed before the response")
                conn.receive_data(data)
            elif kind is h11.Data:
                data = event.data  # type: ignore[union-attr]
                size += len(data)
                if size > limit:  # chunked or delimited by EOF: counted as it comes
                    raise BodyTooLargeError(limit, None)
                chunks.append(data)
            elif kind is h11.Response:
                status = event.status_code  # type: ignore[union-attr]
                headers = list(event.headers)  # type: ignore[union-attr]  # names lowercased
                announced = _content_length(headers)
                if announced is not None and announced > limit and self._bodied(status):
                    raise BodyTooLargeError(limit, announced)
            elif kind is h11.EndOfMessage:
                break
            elif kind is h11.InformationalResponse:
                continue
            else:  # ConnectionClosed (EOF) or PAUSED: no complete response
                raise PeerClosedError(f"connection closed mid-response ({kind.__name__})")
        if not chunks:
            body = b""
        elif len(chunks) == 1:
            body = chunks[0]
        else:
            body = b"".join(chunks)
        return Response(status, headers, body)

    def _bodied(self, status: int) -> bool:
        """The response to this cycle's request has the body its Content-Length announces
        (not a HEAD answer, a 204 or a 304)."""
        request = self._request
        return status not in (204, 304) and (request is None or request.method != b"HEAD")

    def finish_cycle(self) -> bool:
        """After a complete exchange: True if the connection can carry another request.

        False when either side requires closing (``Connection: close``,
        HTTP/1.0 without keep-alive), when the body ended at EOF, or when the
        peer sent bytes after the response (nothing may follow it unasked).
        """
        conn = self._h11
        if conn is None:
            return self._keep_alive
        self._h11 = None  # the next request starts afresh
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        extra, eof = conn.trailing_data
        return not (extra or eof)

    def is_readable(self) -> bool:
        """True when an idle connection has something to read: EOF, reset or unsolicited bytes.

        Any of these means it cannot carry another request (HTTP/1.1 servers do
        not speak first; a 408 or a FIN precedes their close).
        """
        return bool(self._poll.poll(0))

    def close(self) -> None:
        """Close the socket now; idempotent, never blocks, never raises.

        A task blocked on the socket is woken with ``ClosedResourceError`` (trio's
        ``notify_closing``); one about to use it sees ``_closed`` first, so it never
        touches a descriptor number the kernel may have given to another socket.
        """
        self._closed = True
        self._sock.close()


def _content_length(headers: Headers) -> int | None:
    """The Content-Length h11 accepted (it refuses conflicting ones), or None."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None
