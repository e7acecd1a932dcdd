"""Request bodies and connections are bounded: a body arrives whole within ``body_timeout`` or the
request is a 408 and its connection closed; credentials are checked before a body is read; at most
``max_connections`` connections are open. Real sockets on 127.0.0.1 with a short deadline (0.3 s)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import msgspec
import pytest
import trio

from dispatcher import config as configuration
from dispatcher.frontdoor.server import ConnectionCap, serve_frontdoor
from tests.helpers.daemon import messages_path, running_daemon
from tests.helpers.frontdoor_routes import (
    BATCH,
    BODY_ROUTES,
    CLOUD_HOOK,
    CREATE_FORM,
    HEADER_NAME,
    HEADER_NUMBER,
    ONPREM_HEADER,
    ONPREM_PATH,
    TEMPLATES,
    UPDATE,
    Route,
    hostile_config,
)
from tests.helpers.metrics import parse, value

BODY_TIMEOUT = 0.3


@pytest.fixture
async def daemon(tmp_path: Path):
    with trio.fail_after(60):
        async with running_daemon(hostile_config(tmp_path / "data", body_timeout=BODY_TIMEOUT)) as pair:
            yield pair


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    return received


def status_of(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head_, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, msgspec.json.decode(body) if body else None


async def trickle(daemon_url: str, route: Route, *, send_first: bytes = b"{") -> tuple[float, bytes]:
    """Headers announcing 1,000 bytes, then one byte every 0.05 s: the answer and when it came."""
    stream = await trio.open_tcp_stream(*host_port(daemon_url))
    async with stream:
        await stream.send_all(head(route.path, route.headers_for(b""), 1000) + send_first)
        start = trio.current_time()

        async def dribble() -> None:
            try:
                while True:
                    await trio.sleep(0.05)
                    await stream.send_all(b" ")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the server closed the connection: what we wait for

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            answer = await read_until_closed(stream)
            nursery.cancel_scope.cancel()
        return trio.current_time() - start, answer


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: r.name)
async def test_a_trickled_body_is_a_408_and_the_connection_closes(daemon, route: Route) -> None:
    running, _ = daemon
    with trio.fail_after(10):  # the dribble alone would go on forever
        elapsed, answer = await trickle(running.url, route)
    status, headers, body = status_of(answer)
    assert status == 408 and headers["content-type"] == "application/json", answer
    assert headers.get("connection") == "close"
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 2.0
    if not route.webhook:
        assert body["code"] == 20408 and body["message"] == (
            f"The request body did not arrive within {BODY_TIMEOUT:g} seconds."
        )


async def test_headers_then_nothing_is_a_408(daemon) -> None:
    running, _ = daemon
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*host_port(running.url))
        async with stream:
            await stream.send_all(head(BATCH.path, BATCH.headers, 100))
            status, _, _ = status_of(await read_until_closed(stream))
    assert status == 408


UNAUTHENTICATED = [
    (CREATE_FORM.path, {"Content-Type": "application/x-www-form-urlencoded"}, 401),
    (CREATE_FORM.path, {"Authorization": "Basic bm90OnJpZ2h0"}, 401),
    (BATCH.path, {"Content-Type": "application/json"}, 401),
    (UPDATE.path, {"Authorization": "Basic bm90OnJpZ2h0"}, 401),
    (TEMPLATES.path, {"Authorization": "Bearer wrong"}, 401),
    ("/admin/v1/reload", {}, 401),
    (ONPREM_PATH.path.replace("hook-1-secret-0123", "wrong"), {}, 403),
    (ONPREM_HEADER.path, {HEADER_NAME: "hook-1-secret-0123"}, 403),
    (ONPREM_HEADER.path, {}, 403),
    (f"/webhooks/onprem/{HEADER_NUMBER}/hook-2-secret-0123", {}, 403),  # a header number's path form
    ("/webhooks/cloud/15559999999", {}, 403),  # no such Cloud number
]


@pytest.mark.parametrize("case", range(len(UNAUTHENTICATED)))
async def test_credentials_are_checked_before_the_body_is_read(daemon, case: int) -> None:
    """Without good credentials the answer comes at once, though not one byte of the body was sent."""
    running, _ = daemon
    path, headers, expected = UNAUTHENTICATED[case]
    with trio.fail_after(BODY_TIMEOUT * 0.9):  # well before the body deadline could answer
        stream = await trio.open_tcp_stream(*host_port(running.url))
        async with stream:
            await stream.send_all(head(path, headers, 1_000_000))
            status, headers_, body = status_of(await read_until_closed(stream))
    assert status == expected and headers_["content-type"] == "application/json", body
    # The body was never read, so the connection cannot be reused: a keep-alive client is told so.
    assert headers_.get("connection") == "close", headers_


async def test_an_answer_after_the_whole_body_keeps_the_connection(daemon) -> None:
    """A refusal that read the body (a bad parameter) leaves the connection open for the next request."""
    running, _ = daemon
    body = b"To=x"
    stream = await trio.open_tcp_stream(*host_port(running.url))
    async with stream:
        await stream.send_all(head(CREATE_FORM.path, dict(CREATE_FORM.headers), len(body)) + body)
        with trio.fail_after(5):
            answer = await stream.receive_some(65536)
    status, headers_, _ = status_of(answer)
    assert status == 400 and "connection" not in headers_, headers_


async def test_a_signed_cloud_webhook_keeps_its_size_cap_and_deadline(daemon) -> None:
    """The signature needs the body, so it is read, but no more than 1 MiB and within the deadline."""
    running, _ = daemon
    with trio.fail_after(BODY_TIMEOUT * 0.9):  # refused by its announced length, not read
        stream = await trio.open_tcp_stream(*host_port(running.url))
        async with stream:
            await stream.send_all(head(CLOUD_HOOK.path, CLOUD_HOOK.headers_for(b""), 2 << 20))
            assert status_of(await read_until_closed(stream))[0] == 413
    with trio.fail_after(10):
        _, answer = await trickle(running.url, CLOUD_HOOK)
    assert status_of(answer)[0] == 408


async def test_an_unauthenticated_create_never_waits_for_its_body(daemon) -> None:
    """The daemon keeps serving authentic requests while such a connection is still open."""
    running, client = daemon
    stream = await trio.open_tcp_stream(*host_port(running.url))
    async with stream:
        await stream.send_all(head(messages_path(), {}, 1_000_000) + b"To=")
        resp = await client.get("/healthz")
        assert resp.status_code in (200, 503)
        with trio.fail_after(5):
            assert status_of(await read_until_closed(stream))[0] == 401


def test_config_bounds_the_front_door(tmp_path: Path) -> None:
    cfg = hostile_config(tmp_path)
    assert (cfg.server.body_timeout, cfg.server.max_connections) == (15.0, 1000)
    text = '[server]\nbody_timeout = 0\n[[accounts]]\nsid = "AC00000000000000000000000000000001"\n'
    with pytest.raises(configuration.ConfigError, match="body_timeout"):
        configuration.loads(text + 'auth_token = { value = "x" }\n')
    with pytest.raises(configuration.ConfigError, match="max_connections"):
        configuration.loads("[server]\nmax_connections = 0\n")


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            await send({"type": event["type"] + ".complete"})
            if event["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _get(stream: trio.SocketStream) -> bytes:
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        answer += await stream.receive_some(4096)
    return answer


async def test_at_most_max_connections_are_served_at_once(nursery: trio.Nursery) -> None:
    stop = trio.Event()
    cap = ConnectionCap(2)
    serve = functools.partial(serve_frontdoor, graceful_timeout=1.0, cap=cap)
    [url] = await nursery.start(serve, _hello, "127.0.0.1", 0, stop.wait)
    address = host_port(url)
    with trio.fail_after(10):
        first, second = await trio.open_tcp_stream(*address), await trio.open_tcp_stream(*address)
        assert (await _get(first)).startswith(b"HTTP/1.1 200")
        assert (await _get(second)).startswith(b"HTTP/1.1 200")
        third = await trio.open_tcp_stream(*address)  # the kernel's backlog takes it
        waiting = trio.Event()
        answered: list[bytes] = []

        async def third_request() -> None:
            waiting.set()
            answered.append(await _get(third))

        nursery.start_soon(third_request)
        await waiting.wait()
        with trio.move_on_after(0.3):
            while not answered:  # noqa: ASYNC110 - a list filled by the request task
                await trio.sleep(0.01)
        assert not answered, "a third connection was served while two were open"
        assert (cap.open, cap.waited) == (2, 1)
        await first.aclose()
        while not answered:  # noqa: ASYNC110
            await trio.sleep(0.01)
        assert answered[0].startswith(b"HTTP/1.1 200")
        assert cap.open == 2  # the second and the third
        await second.aclose()
        await third.aclose()
    stop.set()


async def test_an_http2_connection_carries_one_request_at_a_time(nursery: trio.Nursery) -> None:
    """hypercorn speaks h2c on the plain listener: one stream per connection, so the cap holds for it."""
    stop = trio.Event()
    serve = functools.partial(serve_frontdoor, graceful_timeout=1.0)
    [url] = await nursery.start(serve, _hello, "127.0.0.1", 0, stop.wait)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*host_port(url))
        async with stream:
            await stream.send_all(client.data_to_send())  # prior knowledge: the HTTP/2 preface
            settings: list[h2.events.RemoteSettingsChanged] = []
            while not settings:
                events = client.receive_data(await stream.receive_some(65536))
                settings = [e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)]
    assert client.remote_settings.max_concurrent_streams == 1
    stop.set()


async def test_open_connections_are_on_metrics(daemon) -> None:
    running, client = daemon

    async def open_now() -> float:
        return value(parse((await client.get("/metrics")).text), "wadispatch_http_connections")

    before = await open_now()  # the client's own, and the simulator's webhook connections
    assert before >= 1
    extra = [await trio.open_tcp_stream(*host_port(running.url)) for _ in range(3)]
    try:
        with trio.fail_after(10):  # until the accept loop has taken the three from the backlog
            while await open_now() < before + 3:  # noqa: ASYNC110 - polled over HTTP, no event to wait on
                await trio.sleep(0.01)
        samples = parse((await client.get("/metrics")).text)
        assert value(samples, "wadispatch_http_connections_waited_total") == 0
    finally:
        for stream in extra:
            await stream.aclose()
