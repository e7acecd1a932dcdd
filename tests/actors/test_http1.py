"""The strict HTTP/1.1 fast path (``actors.http.framing``) and its hand-over to h11 in ``H11Connection``.

The parser must take only what h11 would read the same way and leave the rest
to h11; the connection tests check which side read each response (by counting
``_fall_back`` calls) and that keep-alive decisions match h11's.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from actors.http.connection import H11Connection, Prepared
from actors.http.framing import encode_response, parse_request_head, parse_response_head, request_head
from actors.http.pool import H11Pool
from actors.transport import Response, ResponseLostError
from tests.helpers.http_servers import (
    TEST_TIMEOUT,
    Handler,
    Reply,
    Seen,
    Server,
    h11_handler,
    ok_app,
    raw_handler,
    read_request,
    start_server,
    url,
)

# -- request heads --------------------------------------------------------------------------------


def test_request_head_is_the_wire_bytes_h11_would_send() -> None:
    headers = [
        (b"host", b"api:8443"),
        (b"Authorization", b"Bearer t0k"),
        (b"content-type", b"application/json"),
    ]
    wire = request_head(b"POST", b"/v1/messages?x=1", headers)
    assert wire == (
        b"POST /v1/messages?x=1 HTTP/1.1\r\nhost: api:8443\r\nAuthorization: Bearer t0k\r\n"
        b"content-type: application/json\r\n"
    )
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire + b"content-length: 2\r\n\r\n{}")
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert (event.method, event.target) == (b"POST", b"/v1/messages?x=1")
    assert conn.next_event() == h11.Data(data=b"{}")


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"PO ST", b"/", [(b"host", b"h")]),
        (b"", b"/", [(b"host", b"h")]),
        (b"GET", b"/a b", [(b"host", b"h")]),
        (b"GET", b"", [(b"host", b"h")]),
        (b"GET", b"/", [(b"host", b"h"), (b"bad name", b"v")]),
        (b"GET", b"/", [(b"host", b"h"), (b"x", b"line\r\nInjected: 1")]),
        (b"GET", b"/", [(b"host", b"h"), (b"x", b" padded")]),
        (b"GET", b"/", [(b"host", b"h"), (b"x", b"nul\x00")]),
    ],
)
def test_request_head_refuses_what_h11_refuses(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError, match=r"^invalid request"):
        request_head(method, target, headers)
    with pytest.raises(h11.LocalProtocolError):
        h11.Connection(h11.CLIENT).send(h11.Request(method=method, target=target, headers=headers))


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        (b"HEAD", [(b"host", b"h")]),
        (b"CONNECT", [(b"host", b"h")]),
        (b"GET", []),
        (b"GET", [(b"host", b"h"), (b"Host", b"h2")]),
        (b"POST", [(b"host", b"h"), (b"Connection", b"close")]),
        (b"POST", [(b"host", b"h"), (b"transfer-encoding", b"chunked")]),
        (b"POST", [(b"host", b"h"), (b"content-length", b"3")]),
        (b"POST", [(b"host", b"h"), (b"expect", b"100-continue")]),
    ],
    ids=["head", "connect", "no-host", "two-hosts", "connection", "te", "content-length", "expect"],
)
def test_request_head_leaves_framing_to_h11(method: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    assert request_head(method, b"/", headers) is None
    assert Prepared.of(method, b"/", headers).wire is None


# -- response heads -------------------------------------------------------------------------------


def head_of(raw: bytes) -> object:
    return parse_response_head(raw, raw.find(b"\r\n\r\n"))


def test_plain_response_head() -> None:
    raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Empty:\r\nContent-Length: 12\r\n\r\n"
    assert head_of(raw) == (
        201,
        [(b"content-type", b"application/json"), (b"x-empty", b""), (b"content-length", b"12")],
        12,
        True,
    )
    assert head_of(b"HTTP/1.1 500 \r\ncontent-length:0\r\n\r\n") == (
        500,
        [(b"content-length", b"0")],
        0,
        True,
    )


@pytest.mark.parametrize(
    "connection",
    [b"close", b"Close", b"keep-alive, close", b"close ,upgrade"],
    ids=["lower", "case", "last", "first"],
)
def test_connection_close_is_seen(connection: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: " + connection + b"\r\nContent-Length: 0\r\n\r\n"
    head = head_of(raw)
    assert isinstance(head, tuple)
    assert head[3] is False


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"this is not http\r\n\r\n",
    ],
    ids=[
        "chunked",
        "eof-delimited",
        "http-1.0",
        "1xx",
        "204",
        "304",
        "two-lengths",
        "signed-length",
        "list-length",
        "huge-length",
        "obs-fold",
        "space-before-colon",
        "bare-lf-header",
        "bare-lf-status",
        "no-colon",
        "nul",
        "short-status",
        "no-reason-space",
        "lowercase-version",
        "garbage",
    ],
)
def test_anything_unusual_is_left_to_h11(raw: bytes) -> None:
    assert head_of(raw) is None


# -- the connection: fast path, hand-over, keep-alive ---------------------------------------------


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bytes each ``_fall_back`` call handed to h11."""
    seen: list[bytes] = []
    original = H11Connection._fall_back

    async def counting(self: H11Connection, received: bytes, limit: int) -> Response:
        seen.append(received)
        return await original(self, received, limit)

    monkeypatch.setattr(H11Connection, "_fall_back", counting)
    return seen


def split_handler(parts: list[bytes], *, then_serve: bool = False) -> Handler:
    """Answer the first request with ``parts``, each in its own write once the client waits."""

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        conn = h11.Connection(h11.SERVER)
        seen = await read_request(stream, conn)
        assert seen is not None
        server.requests.append(seen)
        for part in parts:
            await trio.testing.wait_all_tasks_blocked()  # the client is blocked reading
            await stream.send_all(part)
        if then_serve:
            await h11_handler(ok_app)(stream, server)

    return handler


async def test_fast_path_reads_a_body_split_across_writes(
    nursery: trio.Nursery, fallbacks: list[bytes]
) -> None:
    parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel", b"lo w", b"orld"]
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, split_handler(parts, then_serve=True))
        pool = H11Pool(url(server))
        first = await pool.request(b"POST", b"/a", [], b"x")
        second = await pool.request(b"POST", b"/b", [], b"y")
        await pool.aclose()
    assert (first.status, first.headers, first.body) == (200, [(b"content-length", b"11")], b"hello world")
    assert second.body == b"echo /b"
    assert server.accepts == 1
    assert fallbacks == []


async def test_head_split_across_writes_goes_to_h11_and_the_connection_is_kept(
    nursery: trio.Nursery, fallbacks: list[bytes]
) -> None:
    parts = [b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\n", b"\r\nhello"]
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, split_handler(parts, then_serve=True))
        pool = H11Pool(url(server))
        first = await pool.request(b"POST", b"/a", [(b"authorization", b"Bearer t")], b"{}")
        second = await pool.request(b"POST", b"/b", [(b"authorization", b"Bearer t")], b"{}")
        await pool.aclose()
    assert (first.status, first.body) == (200, b"hello")
    assert second.body == b"echo /b"
    assert server.accepts == 1
    assert fallbacks == [b"HTTP/1.1 200 OK\r\nContent-Le"]  # the second answer was read by the fast path


async def test_chunked_then_plain_on_one_connection(nursery: trio.Nursery, fallbacks: list[bytes]) -> None:
    async def app(seen: Seen) -> Reply:
        return Reply(chunks=(b"chu", b"nked")) if seen.target == b"/chunked" else Reply(chunks=(b"plain",))

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(app))
        pool = H11Pool(url(server))
        bodies = [
            (await pool.request(b"POST", t, [], b"x")).body for t in (b"/chunked", b"/plain", b"/chunked")
        ]
        await pool.aclose()
    assert bodies == [b"chunked", b"plain", b"chunked"]
    assert server.accepts == 1
    assert len(fallbacks) == 2


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ],
    ids=["connection-close", "bytes-after-the-body"],
)
async def test_fast_path_drops_a_connection_that_cannot_be_reused(
    nursery: trio.Nursery, fallbacks: list[bytes], response: bytes
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, raw_handler(response, linger=True))
        pool = H11Pool(url(server))
        resp = await pool.request(b"POST", b"/", [], b"x")
        stats = pool.statistics()
        await pool.aclose()
    assert (resp.status, resp.body) == (200, b"ok")
    assert stats.open_connections == 0
    assert fallbacks == []


async def test_eof_mid_body_on_the_fast_path_is_response_lost(
    nursery: trio.Nursery, fallbacks: list[bytes]
) -> None:
    parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal", b"f"]
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, split_handler(parts))
        pool = H11Pool(url(server))
        with pytest.raises(ResponseLostError, match="mid-response"):
            await pool.request(b"POST", b"/", [], b"x")
        stats = pool.statistics()
        await pool.aclose()
    assert stats.open_connections == 0
    assert fallbacks == []


async def test_request_with_a_framing_header_goes_through_h11(
    nursery: trio.Nursery, fallbacks: list[bytes]
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(ok_app))
        pool = H11Pool(url(server))
        resp = await pool.request(b"POST", b"/bye", [(b"connection", b"close")], b"x")
        stats = pool.statistics()
        await pool.aclose()
    assert resp.body == b"echo /bye"
    assert server.requests[0].header(b"connection") == b"close"
    assert stats.open_connections == 0  # h11 knew we asked to close
    assert fallbacks == []  # read by that cycle's h11 from the start, no hand-over


# -- the server side (the simulator) --------------------------------------------------------------


def request_of(raw: bytes) -> object:
    return parse_request_head(raw, raw.find(b"\r\n\r\n"))


def test_plain_request_head() -> None:
    raw = (
        b"POST /v1/messages?a=b HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer x\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    assert request_of(raw) == (
        b"POST",
        b"/v1/messages?a=b",
        [(b"host", b"sim"), (b"authorization", b"Bearer x"), (b"content-length", b"2")],
        2,
        True,
    )
    assert request_of(b"GET / HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n") == (
        b"GET",
        b"/",
        [(b"host", b"s"), (b"connection", b"close")],
        0,
        False,
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: s\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: s\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: s\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: s\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
    ids=[
        "chunked",
        "expect",
        "head",
        "http-1.0",
        "no-host",
        "two-hosts",
        "double-space",
        "two-lengths",
        "upgrade",
        "garbage",
    ],
)
def test_unusual_requests_are_left_to_h11(raw: bytes) -> None:
    assert request_of(raw) is None


@pytest.mark.parametrize("close", [False, True])
def test_encode_response_reads_back_through_h11(close: bool) -> None:
    wire = encode_response(
        201, b"Created", [(b"content-type", b"application/json")], b'{"ok":1}', close=close
    )
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "s")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(wire)
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    assert (response.status_code, response.reason) == (201, b"Created")
    assert conn.next_event() == h11.Data(data=b'{"ok":1}')
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert (conn.their_state is h11.MUST_CLOSE) is close
    with pytest.raises(ValueError, match="invalid response header"):
        encode_response(200, b"OK", [(b"x", b"a\r\nInjected: 1")], b"", close=False)


def test_a_remembered_head_gives_each_response_its_own_header_list() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    first = parse_response_head(raw, raw.find(b"\r\n\r\n"))
    assert first is not None
    first[1].append((b"x-mutated", b"1"))
    second = parse_response_head(raw + b"{}", raw.find(b"\r\n\r\n"))
    assert second == (200, [(b"content-type", b"application/json"), (b"content-length", b"2")], 2, True)
