"""The simulator over real sockets on 127.0.0.1:0 (real clock, ``fail_after`` guards): h11 server, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial

import h11
import httpx
import pytest
import trio

from dispatcher.simulator import SimNumber, SimRequest, SimResponse, Simulator, serve
from dispatcher.simulator.cli import main, run_standalone

NUMBER = "+15550000001"
PREFIX = "/15550000001"
TEXT = {"to": "15551230001", "type": "text", "text": {"body": "hello"}}
GUARD = 10.0


@pytest.fixture
async def sim() -> Simulator:
    return Simulator([SimNumber(NUMBER, "s3cret", rate=1000.0, burst=1000)], status_delays=None)


@pytest.fixture
async def url(sim: Simulator, nursery: trio.Nursery) -> str:
    started: str = await nursery.start(serve, sim)
    return started


async def _exchange(stream: trio.SocketStream, conn: h11.Connection, *events: h11.Event) -> tuple[int, bytes]:
    """Send one request's events, read one full response; returns (status, body)."""
    for event in events:
        await stream.send_all(conn.send(event) or b"")
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65_536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, body
        else:
            raise AssertionError(f"unexpected {event!r}")


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def test_api_and_control_over_http(sim: Simulator, url: str) -> None:
    with trio.fail_after(GUARD):
        async with httpx.AsyncClient(base_url=url) as client:
            login = await client.post(f"{PREFIX}/v1/users/login", auth=("admin", "s3cret"))
            assert login.status_code == 200
            token = login.json()["users"][0]["token"]
            bearer = {"Authorization": f"Bearer {token}"}
            sent = await client.post(f"{PREFIX}/v1/messages", json=TEXT, headers=bearer)
            assert sent.status_code == 201
            assert sent.headers["content-type"] == "application/json"
            msg_id = sent.json()["messages"][0]["id"]

            counters = (await client.get("/_sim/counters")).json()
            assert counters["numbers"][NUMBER]["accepted"] == 1
            assert counters["numbers"][NUMBER]["by_recipient"] == {"15551230001": 1}
            received = (await client.get("/_sim/received", params={"number": NUMBER})).json()
            assert received["messages"] == [
                {"recipient": "15551230001", "type": "text", "content": "hello", "id": msg_id}
            ]
            added = await client.post("/_sim/numbers", json={"number": "+15550000002", "password": "pw"})
            assert added.json() == {"number": "+15550000002", "endpoint": "/15550000002"}
            assert (await client.post("/15550000002/v1/users/login", auth=("admin", "pw"))).status_code == 200

            assert (await client.post("/_sim/clock", json={"advance": 7 * 86_400})).status_code == 200
            expired = await client.get(f"{PREFIX}/v1/health", headers=bearer)
            assert expired.status_code == 401
            assert expired.json()["errors"][0]["code"] == 1005
            assert (await client.post("/_sim/reset")).status_code == 200
    assert sim.counters(NUMBER).accepted == 0


async def test_keep_alive_serves_many_requests_on_one_connection(sim: Simulator, url: str) -> None:
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(*_host_port(url))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            login = h11.Request(
                method="POST",
                target=f"{PREFIX}/v1/users/login",
                headers=[
                    ("host", "sim"),
                    ("authorization", "Basic YWRtaW46czNjcmV0"),
                    ("content-length", "0"),
                ],
            )
            status, body = await _exchange(stream, conn, login, h11.EndOfMessage())
            assert status == 200
            token = json.loads(body)["users"][0]["token"]
            payload = json.dumps(TEXT).encode()
            for _ in range(5):
                conn.start_next_cycle()
                send = h11.Request(
                    method="POST",
                    target=f"{PREFIX}/v1/messages",
                    headers=[
                        ("host", "sim"),
                        ("authorization", f"Bearer {token}"),
                        ("content-type", "application/json"),
                        ("content-length", str(len(payload))),
                    ],
                )
                status, body = await _exchange(stream, conn, send, h11.Data(data=payload), h11.EndOfMessage())
                assert status == 201, body
            assert conn.our_state is h11.DONE and conn.their_state is h11.DONE  # still open, reusable
    assert sim.counters(NUMBER).accepted == 5


async def test_chunked_request_body_is_read(sim: Simulator, url: str) -> None:
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(*_host_port(url))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            req = h11.Request(
                method="POST",
                target="/_sim/numbers",
                headers=[("host", "sim"), ("transfer-encoding", "chunked")],
            )
            status, body = await _exchange(
                stream,
                conn,
                req,
                h11.Data(data=b'{"number": "+15550000003", '),
                h11.Data(data=b'"password": "pw"}'),
                h11.EndOfMessage(),
            )
    assert status == 201, body
    assert "+15550000003" in sim.numbers()


async def _raw(url: str, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    stream = await trio.open_tcp_stream(*_host_port(url))
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65_536):
            received += chunk
    return received


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"POST /_sim/reset HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
async def test_malformed_request_gets_400_then_close(url: str, data: bytes) -> None:
    with trio.fail_after(GUARD):
        answer = await _raw(url, data)
    assert answer.startswith(b"HTTP/1.1 400 ")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["errors"][0]["code"] == 1025


async def test_oversized_body_gets_413(sim: Simulator, nursery: trio.Nursery) -> None:
    url = await nursery.start(partial(serve, sim, max_body=1000))
    with trio.fail_after(GUARD):
        answer = await _raw(url, b"POST /_sim/reset HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_idle_connection_is_closed(sim: Simulator, nursery: trio.Nursery) -> None:
    url = await nursery.start(partial(serve, sim, idle_timeout=0.05))
    with trio.fail_after(GUARD):
        assert await _raw(url, b"") == b""


class _Receiver:
    """A minimal webhook endpoint (h11 over trio) recording every POST body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65_536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.bodies.append(body)
                body = b""
                response = h11.Response(status_code=200, headers=[("content-length", "0")])
                await stream.send_all((conn.send(response) or b"") + (conn.send(h11.EndOfMessage()) or b""))
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return


async def test_webhooks_reach_a_real_receiver_with_the_default_poster(nursery: trio.Nursery) -> None:
    receiver = _Receiver()
    listeners = await nursery.start(partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1"))
    hook = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/wa"
    sim = Simulator([SimNumber(NUMBER, "s3cret", webhook_url=hook)], status_delays=(0.0, 0.0, 0.0))
    await nursery.start(sim.run)
    url = await nursery.start(serve, sim)
    with trio.fail_after(GUARD):
        async with httpx.AsyncClient(base_url=url) as client:
            token = (await client.post(f"{PREFIX}/v1/users/login", auth=("admin", "s3cret"))).json()["users"][
                0
            ]["token"]
            sent = await client.post(
                f"{PREFIX}/v1/messages", json=TEXT, headers={"Authorization": f"Bearer {token}"}
            )
            assert sent.status_code == 201
            inbound = {"number": NUMBER, "from": "15551230001", "body": "hi back"}
            assert (await client.post("/_sim/inbound", json=inbound)).status_code == 201
        # counted once the poster has read the 200, after the receiver saw the body: no event to wait on
        while sim.counters(NUMBER).webhooks_sent < 4:  # noqa: ASYNC110
            await trio.sleep(0.01)
    payloads = [json.loads(body) for body in receiver.bodies]
    statuses = [p["statuses"][0]["status"] for p in payloads if "statuses" in p]
    assert statuses == ["sent", "delivered", "read"]
    assert [p["messages"][0]["text"]["body"] for p in payloads if "messages" in p] == ["hi back"]
    assert sim.counters(NUMBER).webhooks_sent == 4


async def test_run_standalone_serves_numbers(nursery: trio.Nursery) -> None:
    url = await nursery.start(partial(run_standalone, "127.0.0.1", 0, [SimNumber(NUMBER, "pw")]))
    with trio.fail_after(GUARD):
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.post(f"{PREFIX}/v1/users/login", auth=("admin", "pw"))).status_code == 200


async def test_python_m_dispatcher_simulator_prints_its_url_and_serves() -> None:
    argv = [
        sys.executable,
        "-m",
        "dispatcher.simulator",
        "--listen",
        "127.0.0.1:0",
        "--number",
        f"{NUMBER}:pw",
    ]
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            output = b""
            while b"listening on http://" not in output:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, output
                output += chunk
            line = next(ln for ln in output.decode().splitlines() if "listening on" in ln)
            url = line.rsplit(" ", 1)[1]
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get(f"{PREFIX}/v1/health")).status_code == 401
                assert (
                    await client.post(f"{PREFIX}/v1/users/login", auth=("admin", "pw"))
                ).status_code == 200
        finally:
            proc.terminate()
            assert await proc.wait() == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--number", "15550000001:pw"],
        ["--number", "+15550000001"],
        ["--status-delays", "1,2"],
        ["--listen", "x"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2


async def test_a_crashing_handler_gives_500_and_the_server_keeps_serving(
    sim: Simulator, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sim.handle

    async def flaky(req: SimRequest) -> SimResponse:
        if req.target == "/boom":
            raise RuntimeError("boom")
        return await real(req)

    monkeypatch.setattr(sim, "handle", flaky)
    with trio.fail_after(GUARD):
        async with httpx.AsyncClient(base_url=url) as client:
            crashed = await client.get("/boom")
            assert crashed.status_code == 500
            assert crashed.json()["errors"][0]["code"] == 1014
            assert (await client.get("/_sim/counters")).status_code == 200


# -- plain requests (actors.http.framing) and the hand-over to h11 ------------------------------------


async def _answers(
    stream: trio.SocketStream, count: int
) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    """Read ``count`` responses with an h11 client that believes it sent ``count`` GETs."""
    conn = h11.Connection(h11.CLIENT)
    answers = []
    for _ in range(count):
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "sim")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, [], b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65_536))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        answers.append((status, headers, body))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
    return answers


def _add(number: str) -> bytes:
    body = json.dumps({"number": number, "password": "pw"}).encode()
    return b"POST /_sim/numbers HTTP/1.1\r\nHost: sim\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


COUNTERS = b"GET /_sim/counters HTTP/1.1\r\nHost: sim\r\n\r\n"


async def test_plain_requests_one_write_each_keep_the_connection(sim: Simulator, url: str) -> None:
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(*_host_port(url))
        async with stream:
            await stream.send_all(_add("+15550000004"))
            (added,) = await _answers(stream, 1)
            await stream.send_all(COUNTERS)
            (counters,) = await _answers(stream, 1)
    assert added[0] == 201
    assert (b"content-length", b"%d" % len(added[2])) in added[1]
    assert counters[0] == 200
    assert "+15550000004" in sim.numbers()


async def test_pieces_pipelining_and_chunked_are_served_by_h11(sim: Simulator, url: str) -> None:
    first, second = _add("+15550000005"), _add("+15550000006")
    chunked = (
        b"POST /_sim/numbers HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'10\r\n{"number": "+155\r\n1b\r\n50000007", "password": "p"}\r\n0\r\n\r\n'
    )
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(*_host_port(url))
        async with stream:
            await stream.send_all(first[:30])  # a head in pieces
            await trio.testing.wait_all_tasks_blocked()  # the server has read the first part
            await stream.send_all(first[30:])
            (one,) = await _answers(stream, 1)
            await stream.send_all(second + COUNTERS)  # pipelined
            two = await _answers(stream, 2)
            await stream.send_all(chunked)  # the connection stays with h11 from here
            (three,) = await _answers(stream, 1)
    assert [one[0], *(a[0] for a in two), three[0]] == [201, 201, 200, 201]
    assert {"+15550000005", "+15550000006", "+15550000007"} <= set(sim.numbers())


async def test_plain_body_in_pieces(sim: Simulator, url: str) -> None:
    request = _add("+15550000008")
    head_end = request.index(b"\r\n\r\n") + 4
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(*_host_port(url))
        async with stream:
            await stream.send_all(request[: head_end + 3])
            await trio.testing.wait_all_tasks_blocked()  # the server has read the first part
            await stream.send_all(request[head_end + 3 :])
            (answer,) = await _answers(stream, 1)
    assert answer[0] == 201
    assert "+15550000008" in sim.numbers()


async def test_plain_connection_close_is_answered_then_closed(url: str) -> None:
    with trio.fail_after(GUARD):
        answer = await _raw(url, b"GET /_sim/counters HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in head + b"\r\n"
    assert json.loads(body)["numbers"]


async def test_body_cut_by_eof_gets_400(url: str) -> None:
    with trio.fail_after(GUARD):
        stream = await trio.open_tcp_stream(*_host_port(url))
        async with stream:
            await stream.send_all(b"POST /_sim/numbers HTTP/1.1\r\nHost: sim\r\nContent-Length: 50\r\n\r\n{")
            await stream.send_eof()
            answer = b""
            while chunk := await stream.receive_some(65_536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_the_idle_reaper_closes_only_connections_idle_past_the_timeout(
    sim: Simulator, nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    url = await nursery.start(partial(serve, sim, idle_timeout=10.0))
    stream = await trio.open_tcp_stream(*_host_port(url))
    async with stream:
        for _ in range(3):  # 18 s of life, never 10 s idle: kept
            await stream.send_all(COUNTERS)
            [(status, _, _)] = await _answers(stream, 1)
            assert status == 200
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(6.0)
            await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(4.0)  # now 10 s idle
        await trio.testing.wait_all_tasks_blocked()
        assert os.read(stream.socket.fileno(), 100) == b""  # closed by the server (no wait: it did already)
