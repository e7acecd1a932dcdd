"""H11Pool against real sockets on 127.0.0.1: small trio servers from ``tests.helpers.http_servers``.

Well-behaved servers speak h11; misbehaving ones write hand-made bytes. Every
test runs under ``trio.fail_after`` on the real clock; nothing sleeps to test
timing (pauses are ``wait_all_tasks_blocked``), and the two timeout tests use
servers that never answer.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import attrs
import h11
import pytest
import trio
import trio.testing

from actors.http.connection import H11Connection
from actors.http.pool import H11Pool, PoolTimeout
from actors.transport import (
    ConnectError,
    RequestTimeout,
    ResponseLostError,
    Transport,
    TransportError,
)
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
    reset,
    start_server,
    url,
)

# -- keep-alive and pool discipline ----------------------------------------------------------------


async def test_is_a_transport() -> None:
    pool: Transport = H11Pool("http://127.0.0.1:1")
    await pool.aclose()


async def test_reuses_one_connection_for_sequential_requests(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(ok_app))
        pool = H11Pool(url(server))
        for i in range(20):
            resp = await pool.request(b"POST", b"/m/%d" % i, [], b"x" * i)
            assert (resp.status, resp.body) == (200, b"echo /m/%d" % i)
        stats = pool.statistics()
        await pool.aclose()
    assert server.accepts == 1
    assert [len(r.body) for r in server.requests] == list(range(20))
    assert (stats.open_connections, stats.idle_connections, stats.active_connections) == (1, 1, 0)
    assert (stats.requests_total, stats.connections_opened, stats.reconnects) == (20, 1, 0)


async def test_sets_host_content_length_default_headers_and_path_prefix(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(ok_app))
        pool = H11Pool(url(server, "/v17.0/15550000001/"), default_headers=[(b"authorization", b"Bearer t")])
        resp = await pool.request(b"POST", b"/messages?x=1", [(b"x-idem", b"k1")], b'{"a":1}')
        await pool.request(b"GET", b"/health", [], b"")
        await pool.aclose()
    assert resp.body == b"echo /v17.0/15550000001/messages?x=1"
    post, get = server.requests
    assert post.target == b"/v17.0/15550000001/messages?x=1"
    assert post.header(b"host") == b"127.0.0.1:%d" % server.port
    assert post.header(b"authorization") == b"Bearer t"
    assert post.header(b"x-idem") == b"k1"
    assert post.header(b"content-length") == b"7"
    assert post.body == b'{"a":1}'
    assert get.target == b"/v17.0/15550000001/health"
    assert get.header(b"content-length") is None
    assert get.header(b"authorization") == b"Bearer t"


async def test_concurrency_limited_to_max_connections(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def gated(seen: Seen) -> Reply:
        await release.wait()
        return Reply(chunks=(seen.target,))

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(gated))
        pool = H11Pool(url(server), max_connections=3)
        bodies: list[bytes] = []

        async def one(i: int) -> None:
            bodies.append((await pool.request(b"POST", b"/%d" % i, [], b"")).body)

        async with trio.open_nursery() as clients:
            for i in range(10):
                clients.start_soon(one, i)
            await server.wait_for(lambda s: len(s.requests) == 3)
            await trio.testing.wait_all_tasks_blocked()
            stats = pool.statistics()
            assert (stats.open_connections, stats.active_connections, stats.waiting_requests) == (3, 3, 7)
            assert "3 active, 7 waiting" in repr(pool)
            release.set()
        stats = pool.statistics()
        await pool.aclose()
    assert sorted(bodies) == sorted(b"/%d" % i for i in range(10))
    assert server.accepts == 3
    assert server.max_open == 3
    assert (stats.open_connections, stats.idle_connections, stats.waiting_requests) == (3, 3, 0)


async def test_waiters_are_served_fifo(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def first_blocks(seen: Seen) -> Reply:
        if seen.target == b"/0":
            await release.wait()
        return Reply()

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(first_blocks))
        pool = H11Pool(url(server), max_connections=1)
        async with trio.open_nursery() as clients:
            clients.start_soon(pool.request, b"GET", b"/0", [], b"")
            await server.wait_for(lambda s: len(s.requests) == 1)
            for i in range(1, 6):
                clients.start_soon(pool.request, b"GET", b"/%d" % i, [], b"")
                await trio.testing.wait_all_tasks_blocked()  # queued before the next one starts
            assert pool.statistics().waiting_requests == 5
            release.set()
        await pool.aclose()
    assert server.targets == [b"/%d" % i for i in range(6)]
    assert server.accepts == 1


async def test_connection_close_response_reconnects(nursery: trio.Nursery) -> None:
    async def close_first(seen: Seen) -> Reply:
        return Reply(close=seen.target == b"/1")

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(close_first))
        pool = H11Pool(url(server))
        first = await pool.request(b"GET", b"/1", [], b"")
        assert first.header(b"Connection") == b"close"
        assert pool.statistics().open_connections == 0
        await pool.request(b"GET", b"/2", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert server.accepts == 2
    assert (stats.connections_opened, stats.reconnects, stats.retries) == (2, 1, 0)


async def test_idle_connection_closed_by_server_is_replaced(nursery: trio.Nursery) -> None:
    async def drop_first(seen: Seen) -> Reply:
        return Reply(drop_after=seen.target == b"/1")  # keep-alive promised, then closed

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(drop_first))
        pool = H11Pool(url(server))
        await pool.request(b"GET", b"/1", [], b"")
        await server.wait_for(lambda s: s.closed == 1)
        assert pool.statistics().idle_connections == 1
        resp = await pool.request(b"GET", b"/2", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert resp.status == 200
    assert server.accepts == 2
    assert server.targets == [b"/1", b"/2"]
    assert (stats.reconnects, stats.retries) == (1, 0)


async def test_stale_connection_failing_on_write_is_retried_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race the idle check cannot see: the server's RST lands after the check, before the write.
    monkeypatch.setattr(H11Connection, "is_readable", lambda self: False)

    async def reset_first(seen: Seen) -> Reply:
        return Reply(reset_after=seen.target == b"/1")

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(reset_first))
        pool = H11Pool(url(server))
        await pool.request(b"GET", b"/1", [], b"")
        await server.wait_for(lambda s: s.closed == 1)
        resp = await pool.request(b"POST", b"/2", [], b"payload")
        stats = pool.statistics()
        await pool.aclose()
    assert resp.status == 200
    assert server.targets == [b"/1", b"/2"]
    assert server.accepts == 2
    assert (stats.retries, stats.reconnects) == (1, 1)


async def test_idle_timeout_expires_connections(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(ok_app))
        pool = H11Pool(url(server), idle_timeout=0.0)
        for _ in range(3):
            await pool.request(b"GET", b"/", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert server.accepts == 3
    assert (stats.open_connections, stats.connections_opened, stats.reconnects) == (1, 3, 0)


# -- response framing --------------------------------------------------------------------------------


async def test_chunked_response_then_reuse(nursery: trio.Nursery) -> None:
    async def chunked(seen: Seen) -> Reply:
        return Reply(chunks=(b"hel", b"lo ", b"wor", b"ld"))

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(chunked))
        pool = H11Pool(url(server))
        first = await pool.request(b"GET", b"/", [], b"")
        second = await pool.request(b"GET", b"/", [], b"")
        await pool.aclose()
    assert first.header(b"transfer-encoding") == b"chunked"
    assert first.body == second.body == b"hello world"
    assert server.accepts == 1


async def test_response_written_in_tiny_pieces(nursery: trio.Nursery) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7\r\n, tiny \r\n6\r\npieces\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, raw_handler(response, pieces=3))
        pool = H11Pool(url(server))
        resp = await pool.request(b"GET", b"/", [], b"")
        await pool.aclose()
    assert (resp.status, resp.body) == (200, b"hello, tiny pieces")
    assert resp.headers == [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]


async def test_informational_responses_are_skipped(nursery: trio.Nursery) -> None:
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    )
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, raw_handler(response))
        pool = H11Pool(url(server))
        resp = await pool.request(b"POST", b"/", [], b"x")
        await pool.aclose()
    assert (resp.status, resp.body) == (201, b"done")
    assert resp.header(b"link") is None


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\n\r\nuntil EOF",
        b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nuntil EOF",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nuntil EOFHTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["eof-delimited", "http-1.0", "unsolicited-bytes"],
)
async def test_responses_that_end_the_connection(nursery: trio.Nursery, response: bytes) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, raw_handler(response, linger=response.count(b"HTTP/") == 2))
        pool = H11Pool(url(server))
        resp = await pool.request(b"GET", b"/", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert (resp.status, resp.body) == (200, b"until EOF")
    assert stats.open_connections == 0


async def test_bodiless_responses_keep_the_connection(nursery: trio.Nursery) -> None:
    async def bodiless(seen: Seen) -> Reply:
        if seen.target == b"/204":
            return Reply(status=204, chunks=())
        if seen.target == b"/304":
            return Reply(status=304, chunks=(), headers=[(b"content-length", b"50")])
        return Reply(chunks=(b"x" * 100,))  # HEAD: h11 sends the headers only

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(bodiless))
        pool = H11Pool(url(server))
        r204 = await pool.request(b"DELETE", b"/204", [], b"")
        r304 = await pool.request(b"GET", b"/304", [], b"")
        head = await pool.request(b"HEAD", b"/head", [], b"")
        get = await pool.request(b"GET", b"/get", [], b"")
        await pool.aclose()
    assert (r204.status, r204.body) == (204, b"")
    assert (r304.status, r304.body) == (304, b"")
    assert (head.status, head.body, head.header(b"content-length")) == (200, b"", b"100")
    assert get.body == b"x" * 100
    assert server.accepts == 1


async def test_large_bodies_both_ways(nursery: trio.Nursery) -> None:
    async def echo(seen: Seen) -> Reply:
        return Reply(chunks=(seen.body, seen.body[::-1]))  # chunked, 2 x 3 MiB

    payload = bytes(range(256)) * (3 * 4096)
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(echo))
        pool = H11Pool(url(server), max_response_body=2 * len(payload))  # exactly the limit
        resp = await pool.request(b"PUT", b"/big", [], payload)
        await pool.aclose()
    assert len(resp.body) == 2 * len(payload)
    assert resp.body == payload + payload[::-1]


# -- failures ---------------------------------------------------------------------------------------


async def test_connection_refused_is_connect_error() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        pool = H11Pool(f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectError, match="cannot connect") as info:
            await pool.request(b"GET", b"/", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert isinstance(info.value.__cause__, OSError)
    assert (stats.open_connections, stats.connections_opened) == (0, 0)


async def test_unresolvable_host_is_connect_error() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        pool = H11Pool("http://no-such-host.invalid", connect_timeout=2.0)
        with pytest.raises(ConnectError):  # NXDOMAIN, or the connect timeout where DNS is unreachable
            await pool.request(b"GET", b"/", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert (stats.open_connections, stats.active_connections) == (0, 0)


async def test_request_timeout_closes_the_connection(nursery: trio.Nursery) -> None:
    async def first_hangs(seen: Seen) -> Reply:
        if seen.target == b"/slow":
            await trio.sleep_forever()
        return Reply()

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(first_hangs))
        pool = H11Pool(url(server), request_timeout=0.2)
        with pytest.raises(RequestTimeout) as info:
            await pool.request(b"POST", b"/slow", [], b"x")
        assert isinstance(info.value.__cause__, trio.TooSlowError)
        assert pool.statistics().open_connections == 0
        resp = await pool.request(b"POST", b"/fast", [], b"x")
        await pool.aclose()
    assert resp.status == 200
    assert server.accepts == 2


async def test_a_warm_connection_times_out_by_the_deadline_sweeper(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    """A request on an idle connection runs without a cancel scope: the pool's sweeper
    closes its connection at the deadline, and the request raises RequestTimeout."""

    async def second_hangs(seen: Seen) -> Reply:
        if seen.target == b"/slow":
            await trio.sleep_forever()
        return Reply()

    server = await start_server(nursery, h11_handler(second_hangs))
    pool = H11Pool(url(server), request_timeout=10.0)
    assert (await pool.request(b"POST", b"/warm", [], b"x")).status == 200  # connects: a cancel scope
    assert (await pool.request(b"POST", b"/fast", [], b"x")).status == 200  # the warm path
    assert pool._sweeping  # watching until that request's deadline
    mock_clock.jump(10.0)
    await trio.testing.wait_all_tasks_blocked()
    assert not pool._sweeping  # nothing in flight: the sweeper ended
    failure: list[BaseException] = []

    async def slow() -> None:
        try:
            await pool.request(b"POST", b"/slow", [], b"x")
        except RequestTimeout as exc:
            failure.append(exc)

    nursery.start_soon(slow)
    await server.wait_for(lambda s: s.targets[-1:] == [b"/slow"])
    await trio.testing.wait_all_tasks_blocked()
    mock_clock.jump(9.9)
    await trio.testing.wait_all_tasks_blocked()
    assert failure == []
    mock_clock.jump(0.1)
    await trio.testing.wait_all_tasks_blocked()
    assert len(failure) == 1
    assert isinstance(failure[0].__cause__, trio.ClosedResourceError)
    stats = pool.statistics()
    assert (stats.open_connections, stats.reconnects) == (0, 0)
    assert (await pool.request(b"POST", b"/after", [], b"x")).status == 200
    await pool.aclose()
    assert server.accepts == 2


async def test_waiting_past_the_deadline_is_pool_timeout(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(seen: Seen) -> Reply:
        await trio.sleep_forever()
        raise AssertionError

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(hangs))
        pool = H11Pool(url(server), max_connections=1, request_timeout=10.0)
        async with trio.open_nursery() as clients:
            clients.start_soon(pool.request, b"GET", b"/held", [], b"")
            await server.wait_for(lambda s: len(s.requests) == 1)
            # Same pool, shorter budget for the next request only, so the holder outlives it.
            monkeypatch.setattr(pool, "_request_timeout", 0.2)
            with pytest.raises(PoolTimeout):  # a ConnectError: it never left
                await pool.request(b"GET", b"/queued", [], b"")
            clients.cancel_scope.cancel()
        stats = pool.statistics()
        await pool.aclose()
    assert server.targets == [b"/held"]
    assert (stats.open_connections, stats.waiting_requests) == (0, 0)


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
async def test_close_after_reading_request_is_response_lost_not_retried(
    nursery: trio.Nursery, how: str, reused: bool
) -> None:
    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        conn = h11.Connection(h11.SERVER)
        while (seen := await read_request(stream, conn)) is not None:
            server.requests.append(seen)
            server.notify()
            if seen.target == b"/lost":
                if how == "rst":
                    reset(stream)
                return
            await stream.send_all(
                b"".join(
                    conn.send(e) or b""
                    for e in (h11.Response(status_code=200, headers=[]), h11.EndOfMessage())
                )
            )
            conn.start_next_cycle()

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, handler)
        pool = H11Pool(url(server))
        if reused:
            await pool.request(b"POST", b"/ok", [], b"1")
        with pytest.raises(ResponseLostError):
            await pool.request(b"POST", b"/lost", [], b"2")
        stats = pool.statistics()
        await pool.aclose()
    assert server.targets.count(b"/lost") == 1
    assert server.accepts == 1
    assert (stats.retries, stats.open_connections) == (0, 0)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"this is not http\r\n\r\n",
    ],
    ids=["short-body", "short-chunked", "short-head", "garbage"],
)
async def test_truncated_or_garbled_response_is_response_lost(nursery: trio.Nursery, response: bytes) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, raw_handler(response))
        pool = H11Pool(url(server))
        with pytest.raises(ResponseLostError) as info:
            await pool.request(b"GET", b"/", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert info.value.__cause__ is not None
    assert len(server.requests) == 1
    assert stats.open_connections == 0


async def test_invalid_header_is_value_error_and_frees_the_slot(nursery: trio.Nursery) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(ok_app))
        pool = H11Pool(url(server), max_connections=1)
        with pytest.raises(ValueError, match="invalid request"):
            await pool.request(b"GET", b"/", [(b"bad header", b"x")], b"")
        assert pool.statistics().open_connections == 0
        resp = await pool.request(b"GET", b"/", [], b"")
        await pool.aclose()
    assert resp.status == 200
    assert server.targets == [b"/"]


def test_rejects_bad_base_url() -> None:
    with pytest.raises(ValueError, match="http"):
        H11Pool("ftp://example.com")
    with pytest.raises(ValueError, match="query"):
        H11Pool("http://example.com/a?b=1")
    with pytest.raises(ValueError, match="max_connections"):
        H11Pool("http://example.com", max_connections=0)


# -- cancellation and shutdown -----------------------------------------------------------------------


async def test_cancelled_request_frees_its_slot(nursery: trio.Nursery) -> None:
    async def first_hangs(seen: Seen) -> Reply:
        if seen.target == b"/hang":
            await trio.sleep_forever()
        return Reply()

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(first_hangs))
        pool = H11Pool(url(server), max_connections=1)
        async with trio.open_nursery() as clients:
            in_flight, waiting = trio.CancelScope(), trio.CancelScope()

            async def run_in(scope: trio.CancelScope, target: bytes) -> None:
                with scope:
                    await pool.request(b"GET", target, [], b"")

            clients.start_soon(run_in, in_flight, b"/hang")
            await server.wait_for(lambda s: len(s.requests) == 1)
            clients.start_soon(run_in, waiting, b"/never")
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().waiting_requests == 1
            waiting.cancel()  # a cancelled waiter leaves the queue
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().waiting_requests == 0
            in_flight.cancel()  # a cancelled request closes its connection
        stats = pool.statistics()
        assert (stats.open_connections, stats.active_connections) == (0, 0)
        resp = await pool.request(b"GET", b"/after", [], b"")
        stats = pool.statistics()
        await pool.aclose()
    assert resp.status == 200
    assert server.targets == [b"/hang", b"/after"]
    assert (stats.connections_opened, stats.reconnects) == (2, 0)  # our own close is no reconnect
    assert server.accepts == 2


async def test_cancel_during_tls_handshake_frees_the_slot(nursery: trio.Nursery) -> None:
    async def never_handshakes(stream: trio.abc.Stream, server: Server) -> None:
        await trio.sleep_forever()

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, never_handshakes)
        pool = H11Pool(f"https://127.0.0.1:{server.port}", max_connections=1)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                inner.start_soon(pool.request, b"GET", b"/", [], b"")
                await server.wait_for(lambda s: s.accepts == 1)
                await trio.testing.wait_all_tasks_blocked()
                assert pool.statistics().active_connections == 1
                scope.cancel()
        assert pool.statistics().open_connections == 0
        await pool.aclose()


async def test_connect_timeout_is_connect_error(nursery: trio.Nursery) -> None:
    async def never_handshakes(stream: trio.abc.Stream, server: Server) -> None:
        await trio.sleep_forever()

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, never_handshakes)
        pool = H11Pool(f"https://127.0.0.1:{server.port}", connect_timeout=0.2)
        with pytest.raises(ConnectError, match=r"within 0\.2s"):
            await pool.request(b"GET", b"/", [], b"")
        assert pool.statistics().open_connections == 0
        await pool.aclose()


async def test_aclose_fails_in_flight_and_queued_requests(nursery: trio.Nursery) -> None:
    async def hangs(seen: Seen) -> Reply:
        await trio.sleep_forever()
        raise AssertionError

    errors: list[TransportError] = []

    async def expect_failure(pool: H11Pool, target: bytes) -> None:
        try:
            await pool.request(b"GET", target, [], b"")
        except TransportError as exc:
            errors.append(exc)

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(hangs))
        pool = H11Pool(url(server), max_connections=1)
        async with trio.open_nursery() as clients:
            clients.start_soon(expect_failure, pool, b"/in-flight")
            await server.wait_for(lambda s: len(s.requests) == 1)
            clients.start_soon(expect_failure, pool, b"/queued")
            await trio.testing.wait_all_tasks_blocked()
            await pool.aclose()
        with pytest.raises(ConnectError, match="closed"):
            await pool.request(b"GET", b"/later", [], b"")
    assert sorted(type(e).__name__ for e in errors) == ["ConnectError", "ResponseLostError"]
    assert pool.statistics().open_connections == 0
    assert "closed" in repr(pool)


# -- TLS ---------------------------------------------------------------------------------------------


@attrs.frozen
class TlsFiles:
    ca: Path  # what the client trusts
    chain: Path  # what the server presents
    key: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate for 127.0.0.1: trustme if installed, else ``openssl req``, else skip.

    (Neither ``cryptography`` nor ``trustme`` is in the venv today; the openssl binary is.)
    """
    tmp = tmp_path_factory.mktemp("tls")
    try:
        import trustme  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        files = TlsFiles(tmp / "ca.pem", tmp / "chain.pem", tmp / "key.pem")
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(files.ca))
        files.chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(files.key))
        return files
    if shutil.which("openssl") is None:
        pytest.skip("cannot make a test certificate: no cryptography/trustme package, no openssl binary")
    files = TlsFiles(tmp / "cert.pem", tmp / "cert.pem", tmp / "key.pem")  # self-signed: CA == leaf
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=wadispatch-test", "-keyout", str(files.key),
         "-out", str(files.chain), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return files


def tls_handler(files: TlsFiles, inner: Handler) -> Handler:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.chain, files.key)

    async def handler(stream: trio.abc.Stream, server: Server) -> None:
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        await inner(tls, server)

    return handler


async def test_tls_keep_alive(nursery: trio.Nursery, tls_files: TlsFiles) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, tls_handler(tls_files, h11_handler(ok_app)))
        pool = H11Pool(
            f"https://127.0.0.1:{server.port}/p",
            ssl_context=ssl.create_default_context(cafile=tls_files.ca),
        )
        bodies = [(await pool.request(b"POST", b"/%d" % i, [], b"x")).body for i in range(3)]
        await pool.aclose()
    assert bodies == [b"echo /p/0", b"echo /p/1", b"echo /p/2"]
    assert server.accepts == 1
    assert server.requests[0].header(b"host") == b"127.0.0.1:%d" % server.port


async def test_tls_untrusted_certificate_is_connect_error(nursery: trio.Nursery, tls_files: TlsFiles) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, tls_handler(tls_files, h11_handler(ok_app)))
        pool = H11Pool(f"https://127.0.0.1:{server.port}")  # default context: not trusted
        with pytest.raises(ConnectError) as info:
            await pool.request(b"GET", b"/", [], b"")
        await pool.aclose()
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)
    assert isinstance(info.value.__cause__.__cause__, ssl.SSLCertVerificationError)
    assert server.requests == []
