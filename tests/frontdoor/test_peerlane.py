"""The peer lane over real sockets on 127.0.0.1: the owner's ``serve_lane`` in front of an ASGI app, and
the forwarder's ``LaneClient``. What the app saw, what the client got, and what each failure is called
(``ConnectError``: not applied; ``ResponseLostError`` / ``RequestTimeout``: it may have been)."""

from __future__ import annotations

import contextlib
import functools
import random
import socket
from collections.abc import AsyncIterator
from typing import Any, Final

import attrs
import msgspec
import pytest
import trio

from actors.transport import ConnectError, RequestTimeout, ResponseLostError
from dispatcher.frontdoor.lane_client import LaneClient
from dispatcher.frontdoor.lane_server import serve_lane
from dispatcher.frontdoor.lane_wire import (
    LENGTH_SIZE,
    PREFACE,
    LaneReply,
    LaneRequest,
    address_of,
    decode_request,
    frame,
)
from dispatcher.frontdoor.server import listen_socket

LIMIT: Final = 1 << 16
GUARD: Final = 20  # seconds: no test here comes near it


@attrs.define
class App:
    """Echoes what it was given; ``?sleep=`` delays the answer, ``?size=`` sends that many bytes."""

    seen: list[dict[str, Any]] = attrs.Factory(list)
    finished: int = 0
    release: trio.Event = attrs.Factory(trio.Event)
    _arrival: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.seen.append({**scope, "body": message["body"]})
        self._arrival.set()
        self._arrival = trio.Event()
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
        if "hold" in query:
            await self.release.wait()
        if "sleep" in query:
            await trio.sleep(float(query["sleep"]))
        if "boom" in query:
            raise RuntimeError("the app failed")
        body = b"x" * int(query["size"]) if "size" in query else message["body"]
        headers = [(b"x-path", scope["path"].encode()), (b"x-method", scope["method"].encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        await send({"type": "http.response.body", "body": body[len(body) // 2 :], "more_body": False})
        self.finished += 1

    async def wait_seen(self, count: int) -> None:
        while len(self.seen) < count:
            await self._arrival.wait()


@attrs.define
class Lane:
    app: App
    address: str
    port: int
    shutdown: trio.Event


async def _serve(nursery: trio.Nursery, app: App, port: int = 0, **options: Any) -> Lane:
    sock = listen_socket("127.0.0.1", port)
    shutdown = trio.Event()
    address = await nursery.start(
        lambda task_status: serve_lane(
            app, sock, shutdown.wait, max_request_bytes=LIMIT, task_status=task_status, **options
        )
    )
    return Lane(app, address, int(address.rsplit(":", 1)[1]), shutdown)


@pytest.fixture
async def lane(nursery: trio.Nursery) -> AsyncIterator[Lane]:
    served = await _serve(nursery, App(), graceful_timeout=2.0)
    yield served
    served.shutdown.set()


def _client(address: str, **options: Any) -> LaneClient:
    settings: dict[str, Any] = {
        "max_request": LIMIT,
        "max_response": LIMIT,
        "request_timeout": 5.0,
        **options,
    }
    return LaneClient(address, **settings)


async def test_a_request_reaches_the_app_as_an_http_scope_and_its_answer_comes_back_whole(lane: Lane) -> None:
    client = _client(lane.address)
    with trio.fail_after(GUARD):
        answer = await client.request(
            b"POST",
            b"/2010-04-01/Accounts/AC1/Messages.json?a=1&b=%2B1",
            [(b"authorization", b"Basic eA==")],
            b"To=1",
        )
    await client.aclose()
    assert (answer.status, answer.body) == (201, b"To=1")
    assert answer.header(b"x-path") == b"/2010-04-01/Accounts/AC1/Messages.json"
    [scope] = lane.app.seen
    assert scope["method"] == "POST" and scope["type"] == "http" and scope["http_version"] == "1.1"
    assert scope["query_string"] == b"a=1&b=%2B1"
    assert scope["headers"] == [(b"authorization", b"Basic eA==")]
    assert scope["client"][0] == "127.0.0.1"


async def test_many_in_flight_on_one_connection_each_gets_its_own_answer(lane: Lane) -> None:
    client = _client(lane.address)
    got: dict[int, bytes] = {}

    async def one(i: int) -> None:
        sleep = random.Random(i).random() / 20
        answer = await client.request(b"POST", f"/m/{i}?sleep={sleep}".encode(), [], f"body-{i}".encode())
        got[i] = answer.body

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(one, i)
    assert got == {i: f"body-{i}".encode() for i in range(300)}
    assert client.connects == 1  # one connection carried them all, answered out of order
    await client.aclose()


async def test_waiters_that_give_up_pass_the_reading_on_and_the_others_get_their_answers(lane: Lane) -> None:
    client = _client(lane.address)
    got: dict[int, bytes] = {}

    async def one(i: int) -> None:
        target = f"/m/{i}?sleep={0.2 if i % 2 else 0.1}".encode()
        with trio.move_on_after(0.05 if i % 2 else GUARD):  # the odd ones give up while waiting
            got[i] = (await client.request(b"POST", target, [], str(i).encode())).body

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(one, i)
    assert got == {i: str(i).encode() for i in range(0, 60, 2)}
    assert client.connects == 1
    await client.aclose()


async def test_the_in_flight_bound_holds_the_rest_back_and_loses_none(nursery: trio.Nursery) -> None:
    app = App()
    served = await _serve(nursery, app, max_in_flight=4)
    client = _client(served.address)
    done: list[int] = []

    async def one(i: int) -> None:
        await client.request(b"GET", b"/held?hold=1", [], b"")
        done.append(i)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as requests:
            for i in range(10):
                requests.start_soon(one, i)
            await app.wait_seen(4)
            await trio.sleep(0.1)
            assert len(app.seen) == 4  # the server reads no further while 4 run
            app.release.set()
    assert sorted(done) == list(range(10))
    await client.aclose()
    served.shutdown.set()


async def test_a_connection_past_the_cap_waits_until_one_closes(nursery: trio.Nursery) -> None:
    app = App()
    served = await _serve(nursery, app, max_connections=1)
    first, second = _client(served.address), _client(served.address)
    got: list[int] = []

    async def late() -> None:
        got.append((await second.request(b"GET", b"/second", [], b"")).status)

    with trio.fail_after(GUARD):
        assert (await first.request(b"GET", b"/first", [], b"")).status == 201
        async with trio.open_nursery() as waiting:
            waiting.start_soon(late)
            await trio.sleep(0.2)
            assert [s["path"] for s in app.seen] == ["/first"]  # the second waits in the backlog
            await first.aclose()
    assert got == [201] and [s["path"] for s in app.seen] == ["/first", "/second"]
    await second.aclose()
    served.shutdown.set()


async def test_an_app_failure_is_a_500_and_a_too_large_answer_a_502(nursery: trio.Nursery) -> None:
    served = await _serve(nursery, App(), max_response=1000)
    client = _client(served.address)
    with trio.fail_after(GUARD):
        failed = await client.request(b"GET", b"/x?boom=1", [], b"")
        large = await client.request(b"GET", b"/x?size=1001", [], b"")
        fits = await client.request(b"GET", b"/x?size=1000", [], b"")
    assert failed.status == 500 and msgspec.json.decode(failed.body)["code"] == 20500
    assert large.status == 502 and b"above the lane's 1000 bytes" in large.body
    assert (fits.status, len(fits.body)) == (201, 1000)
    await client.aclose()
    served.shutdown.set()


async def test_a_bad_method_or_target_is_a_400_and_never_reaches_the_app(lane: Lane) -> None:
    client = _client(lane.address)
    with trio.fail_after(GUARD):
        for method, target in ((b"GE T", b"/x"), (b"GET", b"x"), (b"GET", "/é".encode())):
            answer = await client.request(method, target, [], b"")
            assert answer.status == 400
    assert lane.app.seen == []
    await client.aclose()


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = address_of("127.0.0.1", sock.getsockname()[1])  # bound, not listening: refused
        client = _client(address)
        with trio.fail_after(GUARD), pytest.raises(ConnectError, match="cannot reach the lane"):
            await client.request(b"GET", b"/", [], b"")


async def test_a_request_above_the_limit_never_leaves(lane: Lane) -> None:
    client = _client(lane.address)
    with trio.fail_after(GUARD), pytest.raises(ConnectError, match="above the lane's"):
        await client.request(b"POST", b"/", [], b"x" * (LIMIT + (64 << 10)))
    assert lane.app.seen == []
    await client.aclose()


# -- peers that misbehave: a raw socket server playing the owner ------------------------------


async def _raw_peer(nursery: trio.Nursery, handler: Any) -> str:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return address_of("127.0.0.1", listeners[0].socket.getsockname()[1])


async def _read_request(stream: trio.SocketStream, *, preface: bool = True) -> LaneRequest:
    """The next request on ``stream`` (after the preface, for the first); one frame read at a time."""
    if preface:
        assert await _exactly(stream, len(PREFACE)) == PREFACE
    length = int.from_bytes(await _exactly(stream, LENGTH_SIZE), "big")
    return decode_request(await _exactly(stream, length))


async def _exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive_some(size - len(data))
    return data


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed after reading the request
        b"\x00\x00\x00\x05abc",  # cut mid-frame
        b"\x00\x00\x00\x03\xff\xfe\xfd",  # garbage
        (1 << 30).to_bytes(LENGTH_SIZE, "big"),  # a length above the response limit
    ],
    ids=["closed", "truncated", "garbage", "oversize"],
)
async def test_a_connection_lost_after_the_request_left_is_ambiguous(
    nursery: trio.Nursery, answer: bytes
) -> None:
    async def peer(stream: trio.SocketStream) -> None:
        await _read_request(stream)
        await stream.send_all(answer)
        await stream.aclose()

    client = _client(await _raw_peer(nursery, peer))
    with trio.fail_after(GUARD), pytest.raises(ResponseLostError, match="broke"):
        await client.request(b"POST", b"/", [], b"x")
    await client.aclose()


async def test_no_answer_in_time_is_a_timeout_and_a_late_answer_is_dropped(nursery: trio.Nursery) -> None:
    late, sent_late = trio.Event(), trio.Event()

    async def peer(stream: trio.SocketStream) -> None:
        first = await _read_request(stream, preface=True)
        await late.wait()
        await stream.send_all(frame(LaneReply(first.id, 200, [], b"late")))  # (loopback: delivered)
        sent_late.set()
        second = await _read_request(stream, preface=False)
        await stream.send_all(frame(LaneReply(second.id, 200, [], b"second")))
        await trio.sleep_forever()

    client = _client(await _raw_peer(nursery, peer), request_timeout=0.2)
    with trio.fail_after(GUARD):
        with pytest.raises(RequestTimeout, match="no answer"):
            await client.request(b"POST", b"/", [], b"x")
        late.set()
        await sent_late.wait()  # the late answer waits on the idle connection
        answer = await client.request(b"POST", b"/", [], b"y")
    assert answer.body == b"second"  # the late one was read and dropped, not taken for it
    assert client.connects == 1  # and the connection kept
    await client.aclose()


async def test_a_request_cancelled_before_it_was_written_leaves_the_connection_fit(lane: Lane) -> None:
    client = _client(lane.address)
    with trio.fail_after(GUARD):
        assert (await client.request(b"GET", b"/first", [], b"")).status == 201
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.request(b"GET", b"/never", [], b"")
        assert (await client.request(b"GET", b"/second", [], b"")).status == 201
    assert client.connects == 1
    assert [s["path"] for s in lane.app.seen] == ["/first", "/second"]
    await client.aclose()


async def test_a_peer_restart_is_a_new_connection(nursery: trio.Nursery) -> None:
    first = await _serve(nursery, App())
    client = _client(first.address)
    with trio.fail_after(GUARD):
        assert (await client.request(b"GET", b"/a", [], b"")).status == 201
        first.shutdown.set()
        while True:  # the old server gone, its port free again
            try:
                second = await _serve(nursery, App(), port=first.port)
                break
            except OSError:
                await trio.sleep(0.05)
        assert (await client.request(b"GET", b"/b", [], b"")).status == 201
    assert client.connects == 2 and [s["path"] for s in second.app.seen] == ["/b"]
    await client.aclose()
    second.shutdown.set()


async def test_shutting_down_answers_the_running_and_refuses_the_new(nursery: trio.Nursery) -> None:
    app = App()
    served = await _serve(nursery, app, graceful_timeout=5.0)
    client = _client(served.address)
    outcomes: dict[str, object] = {}

    async def running() -> None:
        outcomes["running"] = (await client.request(b"GET", b"/run?hold=1", [], b"")).status

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as requests:
            requests.start_soon(running)
            await app.wait_seen(1)
            served.shutdown.set()
            await trio.sleep(0.05)
            with pytest.raises(ConnectError, match="refused the request: closing"):
                await client.request(b"GET", b"/new", [], b"")
            app.release.set()
    assert outcomes == {"running": 201}
    assert [s["path"] for s in app.seen] == ["/run"]  # the new one never reached the app
    await client.aclose()


# -- clients that misbehave: raw bytes at the owner's lane -----------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",  # not a lane client
        PREFACE + b"\x00\x00\x00\x09abc",  # cut mid-frame, then closed
        PREFACE + b"\x00\x00\x00\x03\xff\xfe\xfd",  # garbage
        PREFACE + (LIMIT + (64 << 10) + 1).to_bytes(LENGTH_SIZE, "big") + b"x" * 100,  # above the limit
        PREFACE + frame(LaneReply(1, 200, [], b"")),  # an answer where a request belongs
    ],
    ids=["http", "truncated", "garbage", "oversize", "wrong-kind"],
)
async def test_a_hostile_frame_closes_its_connection_and_reaches_nothing(lane: Lane, sent: bytes) -> None:
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream("127.0.0.1", lane.port)
        await stream.send_all(sent)
        if sent.endswith(b"abc"):
            await stream.send_eof()
        with contextlib.suppress(trio.BrokenResourceError):  # a reset: closed with bytes unread
            while await stream.receive_some(65536):  # the server closes it
                pass
        await stream.aclose()
        client = _client(lane.address)  # and serves the next connection as ever
        assert (await client.request(b"GET", b"/fine", [], b"")).status == 201
        await client.aclose()
    assert [s["path"] for s in lane.app.seen] == ["/fine"]
