"""The actor's one seam to a WhatsApp API endpoint: send bytes, get bytes back.

The hot path runs through this small interface so its HTTP layer can be swapped
without touching the actor: ``H11Pool`` (plain h11 over trio streams) in
production, ``InProcessTransport`` (the simulator called directly, no sockets)
in deterministic tests under ``MockClock``.

Error tree (what the caller may assume about the peer)::

    TransportError                 nothing usable came back
    +-- ConnectError               the request never left: always safe to retry
    +-- RequestTimeout             no complete response in time: the request may have been received
    +-- ResponseLostError          request written, connection died before a full response:
                                   the request may have been received (an *ambiguous* send)
    +-- ResponseTooLargeError      the answer's body is above the transport's limit (announced
                                   by Content-Length, or counted while it streamed in): the
                                   request was received and may have been acted on (ambiguous)

``ConnectError`` is the only one that proves the endpoint did not act on the
request; the others are ambiguous and the actor's policy decides. A body that
is too large is refused before it is read (when its Content-Length says so) or
as soon as the count passes the limit, and its connection is closed: nothing
the server sends is buffered beyond the limit. It is not a lost answer but an
unusable one, so it is reported as its own kind (a misbehaving endpoint, not a
broken network) while being retried like any other ambiguous outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, final, runtime_checkable

import attrs

Headers = list[tuple[bytes, bytes]]


@attrs.frozen
class Response:
    """A complete HTTP response; the body is fully read."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


class TransportError(Exception):
    """Base: no usable response came back."""


class ConnectError(TransportError):
    """Could not connect or write the first byte: the peer did not see the request."""


class RequestTimeout(TransportError):
    """No complete response within the timeout: the request may have been received."""


class ResponseLostError(TransportError):
    """The connection broke after the request was (partly) written: ambiguous."""


class ResponseTooLargeError(TransportError):
    """The response body is above the limit: refused unread, its connection closed; ambiguous.

    Attributes:
        limit: the limit in bytes.
        announced: the body's Content-Length if it had one (None: counted while streaming).
    """

    def __init__(self, message: str, *, limit: int, announced: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.announced = announced


class Transport(Protocol):
    """One endpoint of one number (a base URL). Safe for concurrent use by many tasks."""

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        """Send one request; ``target`` is the path (and query) below the endpoint's base URL.

        Raises a ``TransportError`` subclass when no full response arrives.
        """
        ...

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail with ``TransportError``."""
        ...


@final
class BodyStream:
    """A response whose body is read as it arrives (``async for chunk in stream``), for downloads
    too large to hold whole (inbound media).

    The body is counted as it comes and refused past ``limit`` (``ResponseTooLargeError``);
    a body announced larger is refused before this object exists. ``close()`` (synchronous,
    idempotent, also at the end of the body and on any error) closes the connection, so
    it is safe from ``finally`` blocks, cancelled tasks and finalizers.
    """

    __slots__ = ("_close", "_closed", "_limit", "_receive", "headers", "length", "received", "status")

    def __init__(
        self,
        status: int,
        headers: Headers,
        length: int | None,
        receive: Callable[[], Awaitable[bytes]],
        close: Callable[[], None],
        limit: int,
    ) -> None:
        """``receive()`` returns the next piece of the body, b"" at its end; ``length`` is its
        Content-Length, if it has one."""
        self.status = status
        self.headers = headers
        self.length = length
        self.received = 0  # body bytes handed out so far
        self._receive = receive
        self._close = close
        self._limit = limit
        self._closed = False

    @classmethod
    def whole(cls, response: Response, limit: int) -> BodyStream:
        """A response already read (a transport that cannot stream), as one piece."""
        if len(response.body) > limit:
            raise ResponseTooLargeError(
                f"{len(response.body)} bytes above the {limit}-byte limit", limit=limit, announced=None
            )
        pieces = [response.body] if response.body else []

        async def receive() -> bytes:
            return pieces.pop() if pieces else b""

        return cls(response.status, response.headers, len(response.body), receive, pieces.clear, limit)

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._receive()
        except BaseException:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopAsyncIteration
        self.received += len(chunk)
        if self.received > self._limit:
            self.close()
            raise ResponseTooLargeError(
                f"a streamed body above the {self._limit}-byte limit", limit=self._limit, announced=None
            )
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A ``Transport`` that can also hand over a response before its body is read."""

    async def stream(
        self, method: bytes, target: bytes, headers: Headers, *, limit: int, deadline: float
    ) -> BodyStream:
        """Send one request and return once the response head is in; the body follows.

        ``deadline`` (trio time) bounds everything, the body included: a read past it fails
        with ``RequestTimeout``. A Content-Length above ``limit`` is refused at once.

        Raises a ``TransportError`` subclass (``ResponseTooLargeError`` included).
        """
        ...

    async def stream_url(
        self, url: str, headers: Headers, *, limit: int, deadline: float, hosts: tuple[str, ...]
    ) -> BodyStream:
        """``stream`` of a GET on an absolute URL an answer named: the endpoint's own origin, or
        https on a host ending with one of ``hosts``; any other URL is ``ConnectError``, unsent."""
        ...
