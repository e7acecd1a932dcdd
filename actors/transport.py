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

from typing import Protocol

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
