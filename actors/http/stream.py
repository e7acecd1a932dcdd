"""Streamed downloads over HTTP/1.1: the response is handed over once its head is in, the body follows.

For inbound media (up to 100 MB), which must never be held whole. A cold path:
one new connection per download, framed by h11, closed at the end of the body
and never pooled. A download may last minutes and must not hold one of the
number's send connections, and a body read halfway leaves a connection nobody
could reuse anyway.

Failure mapping as ``H11Pool``'s (see ``actors/transport.py``): before the
request is written -> ``ConnectError``; the deadline after that ->
``RequestTimeout``; reset, EOF or garbage -> ``ResponseLostError``; a
Content-Length above the limit -> ``ResponseTooLargeError`` before any of the
body is read (a body counted past it while streaming: ``BodyStream``). The
deadline covers the whole download, body included.
"""

from __future__ import annotations

import ssl

import h11
import trio

from actors.http.connection import PeerClosedError, connect
from actors.transport import (
    BodyStream,
    ConnectError,
    Headers,
    RequestTimeout,
    ResponseLostError,
    ResponseTooLargeError,
)

__all__ = ["open_stream"]

_RECEIVE_SIZE = 65536
_BROKEN = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    h11.RemoteProtocolError,
    PeerClosedError,
)


async def open_stream(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    method: bytes,
    target: bytes,
    headers: Headers,
    limit: int,
    deadline: float,
    where: str,
) -> BodyStream:
    """Connect, send a bodiless request, read the response head; the caller reads the body.

    ``headers`` must hold the Host header; ``where`` names the endpoint in errors.

    Raises:
        ConnectError: the request never left.
        RequestTimeout: ``deadline`` passed after the request was written.
        ResponseLostError: the connection broke, or the answer is not HTTP/1.1.
        ResponseTooLargeError: its Content-Length is above ``limit``.
        ValueError: h11 refused the request (nothing was sent).
    """
    conn = h11.Connection(h11.CLIENT)
    sock: trio.socket.SocketType | None = None
    written = False
    try:
        with trio.move_on_at(deadline) as scope:
            stream, sock = await connect(host, port, ssl_context, host)
            try:
                data = conn.send(h11.Request(method=method, target=target, headers=headers))
                data += conn.send(h11.EndOfMessage()) or b""
            except h11.LocalProtocolError as exc:
                raise ValueError(f"invalid request: {exc}") from exc
            written = True  # from here on the server may have seen it
            await stream.send_all(data or b"")
            response = await _read_head(stream, conn)
        if scope.cancelled_caught:
            raise trio.TooSlowError
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, trio.TooSlowError):
            if not written:
                raise ConnectError(f"no connection to {where} in time") from exc
            raise RequestTimeout(f"no response from {where} in time") from exc
        if isinstance(exc, _BROKEN):
            if not written:
                raise ConnectError(f"cannot connect to {where}: {exc!r}") from exc
            raise ResponseLostError(f"connection to {where} broke: {exc!r}") from exc
        raise
    assert sock is not None
    open_sock = sock
    status = response.status_code
    response_headers: Headers = list(response.headers)
    length = _content_length(response_headers)
    if status in (204, 304) or method == b"HEAD":
        length = 0
    if length is not None and length > limit:
        open_sock.close()
        raise ResponseTooLargeError(
            f"answer from {where} refused: Content-Length {length} above the {limit}-byte limit",
            limit=limit,
            announced=length,
        )

    async def receive() -> bytes:
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    with trio.move_on_at(deadline):
                        conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
                        continue
                    raise RequestTimeout(f"the body from {where} did not arrive in time")
                kind = type(event)
                if kind is h11.Data:
                    data = event.data  # type: ignore[union-attr]
                    return data if type(data) is bytes else bytes(data)
                if kind is h11.EndOfMessage:
                    open_sock.close()
                    return b""
                raise PeerClosedError(f"connection closed mid-body ({kind.__name__})")
        except _BROKEN as exc:
            raise ResponseLostError(f"connection to {where} broke mid-body: {exc!r}") from exc

    return BodyStream(status, response_headers, length, receive, open_sock.close, limit)


async def _read_head(stream: trio.abc.Stream, conn: h11.Connection) -> h11.Response:
    """The final response head (1xx skipped); h11 bounds its size (16 KiB by default)."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
        elif type(event) is h11.Response:
            return event
        elif type(event) is not h11.InformationalResponse:
            raise PeerClosedError(f"connection closed before the response ({type(event).__name__})")


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None
