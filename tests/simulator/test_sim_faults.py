"""Simulator fault injection: each fault, through the core, the in-process transport and real sockets."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio.testing

from actors.http.pool import H11Pool
from actors.transport import ConnectError, ResponseLostError
from dispatcher.core.clock import TrioWallClock
from dispatcher.simulator.config import SimNumber
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.faults import FaultPlan, Refused
from dispatcher.simulator.server import serve
from dispatcher.simulator.transport import InProcessTransport
from dispatcher.simulator.webhooks import REORDER_HOLD

NUMBER = "+15550000001"
OTHER = "+15550000002"
SEND = json.dumps({"to": "15551234567", "type": "text", "text": {"body": "hi"}}).encode()


def make_sim(**kwargs: object) -> Simulator:
    return Simulator(
        [SimNumber(number=n, password="Passw0rd!", rate=1000.0, burst=1000) for n in (NUMBER, OTHER)],
        wall_clock=TrioWallClock(),
        status_delays=None,
        fault_seed=7,
        **kwargs,  # type: ignore[arg-type]
    )


async def login(transport: InProcessTransport) -> list[tuple[bytes, bytes]]:
    resp = await transport.request(
        b"POST", b"/v1/users/login", [(b"authorization", b"Basic YWRtaW46UGFzc3cwcmQh")], b""
    )
    assert resp.status == 200, resp.body
    token = json.loads(resp.body)["users"][0]["token"]
    return [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]


async def test_script_injects_each_fault_in_order() -> None:
    sim = make_sim()
    transport = InProcessTransport(sim, NUMBER)
    auth = await login(transport)
    sim.faults.set(
        "15550000001",
        FaultPlan(script=["error_500", "error_502", "error_503", "throttle", "refuse", "reset", "drop"]),
    )
    for status in (500, 502, 503, 429):
        resp = await transport.request(b"POST", b"/v1/messages", auth, SEND)
        assert resp.status == status
        assert resp.header(b"retry-after") is None
    with pytest.raises(ConnectError):
        await transport.request(b"POST", b"/v1/messages", auth, SEND)
    with pytest.raises(ResponseLostError):
        await transport.request(b"POST", b"/v1/messages", auth, SEND)
    assert sim.counters(NUMBER).accepted == 0  # refused and reset: never acted on
    with pytest.raises(ResponseLostError):
        await transport.request(b"POST", b"/v1/messages", auth, SEND)
    assert sim.counters(NUMBER).accepted == 1  # dropped: accepted, the answer lost
    resp = await transport.request(b"POST", b"/v1/messages", auth, SEND)
    assert resp.status == 201  # the script is spent
    assert sim.faults.injected["15550000001"] == {
        "error_500": 1,
        "error_502": 1,
        "error_503": 1,
        "throttle": 1,
        "refuse": 1,
        "reset": 1,
        "drop": 1,
    }
    assert sim.counters(NUMBER).rejected_429 == 1


async def test_throttle_with_retry_after_and_early_revocation() -> None:
    sim = make_sim()
    transport = InProcessTransport(sim, NUMBER)
    auth = await login(transport)
    sim.faults.set("15550000001", FaultPlan(script=["throttle", "unauthorized"], retry_after=2.5))
    resp = await transport.request(b"POST", b"/v1/messages", auth, SEND)
    assert resp.status == 429 and resp.header(b"retry-after") == b"2.5"
    assert json.loads(resp.body)["errors"][0]["code"] == 1015
    resp = await transport.request(b"POST", b"/v1/messages", auth, SEND)
    assert resp.status == 401
    # The token stays revoked: a plain request with it is refused too, until a new login.
    resp = await transport.request(b"POST", b"/v1/messages", auth, SEND)
    assert resp.status == 401
    assert (await transport.request(b"POST", b"/v1/messages", await login(transport), SEND)).status == 201


async def test_latency_and_jitter_under_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    sim = make_sim()
    transport = InProcessTransport(sim, NUMBER)
    auth = await login(transport)
    sim.faults.set("15550000001", FaultPlan(latency=0.2, jitter=0.1))
    start = trio.current_time()
    assert (await transport.request(b"POST", b"/v1/messages", auth, SEND)).status == 201
    assert 0.2 <= trio.current_time() - start <= 0.3
    # The other number is not slowed.
    other = InProcessTransport(sim, OTHER)
    start = trio.current_time()
    await login(other)
    assert trio.current_time() == start


async def test_endpoint_plan_overrides_the_number_plan() -> None:
    sim = make_sim()
    sim.faults.set("15550000001~1", FaultPlan(down=True))
    up = InProcessTransport(sim, NUMBER, endpoint=0)
    down = InProcessTransport(sim, NUMBER, endpoint=1)
    auth = await login(up)
    with pytest.raises(ConnectError):
        await login(down)  # down: even the login is refused
    assert (await up.request(b"POST", b"/v1/messages", auth, SEND)).status == 201
    sim.faults.clear("15550000001~1")  # back up
    assert (await down.request(b"POST", b"/v1/messages", auth, SEND)).status == 201


async def test_rates_are_seeded_and_repeatable() -> None:
    async def run() -> list[int]:
        sim = make_sim()
        transport = InProcessTransport(sim, NUMBER)
        auth = await login(transport)
        sim.faults.set("15550000001", FaultPlan(error_rate=0.3, error_status=502, throttle_rate=0.2))
        return [(await transport.request(b"POST", b"/v1/messages", auth, SEND)).status for _ in range(200)]

    first, second = await run(), await run()
    assert first == second
    assert 40 < first.count(502) < 80 and 20 < first.count(429) < 60
    assert first.count(201) + first.count(502) + first.count(429) == 200


async def test_core_raises_for_connection_faults() -> None:
    sim = make_sim()
    sim.faults.set("15550000001", FaultPlan(down=True))
    from dispatcher.simulator.exchange import SimRequest

    with pytest.raises(Refused):
        await sim.handle(SimRequest("POST", "/15550000001/v1/users/login"))


async def test_webhooks_delayed_duplicated_and_reordered(autojump_clock: trio.testing.MockClock) -> None:
    posted: list[tuple[float, list[tuple[str, str]]]] = []

    async def poster(url: str, body: bytes) -> int:
        statuses = json.loads(body)["statuses"]
        posted.append((trio.current_time(), [(s["id"], s["status"]) for s in statuses]))
        return 200

    sim = Simulator(
        [SimNumber(number=NUMBER, password="Passw0rd!", webhook_url="http://hooks.invalid/x")],
        wall_clock=TrioWallClock(),
        status_delays=(0.0, 0.5, 1.0),
        poster=poster,
        webhook_concurrency=1,
        fault_seed=1,
    )
    sim.faults.set(
        "15550000001", FaultPlan(webhook_delay=5.0, webhook_duplicate_rate=1.0, webhook_reorder_rate=1.0)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = InProcessTransport(sim, NUMBER)
        auth = await login(transport)
        assert (await transport.request(b"POST", b"/v1/messages", auth, SEND)).status == 201
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert posted[0][0] >= 5.0  # delayed
    stages = [status for _, batch in posted for _, status in batch]
    # "sent" held back behind "delivered" (duplicated); "read" held, then posted when nothing overtook it.
    assert stages == ["delivered", "sent", "delivered", "read"]
    assert posted[-1][0] >= 5.0 + 1.0 + REORDER_HOLD
    injected = sim.faults.injected["15550000001"]
    assert injected == {"webhook_delay": 1, "webhook_reorder": 2, "webhook_duplicate": 1}


async def test_control_api_sets_lists_and_clears_faults() -> None:
    sim = make_sim()
    from dispatcher.simulator.exchange import SimRequest

    async def call(method: str, target: str, body: object = None) -> tuple[int, object]:
        raw = b"" if body is None else json.dumps(body).encode()
        resp = await sim.handle(SimRequest(method, target, {}, raw))
        return resp.status, json.loads(resp.body)

    status, body = await call("PUT", "/_sim/faults/15550000001~2", {"error_rate": 0.5, "error_status": 502})
    assert status == 200 and body["key"] == "15550000001~2"  # type: ignore[index]
    status, body = await call("GET", "/_sim/faults")
    assert body["plans"]["15550000001~2"]["error_rate"] == 0.5  # type: ignore[index]
    assert (await call("PUT", "/_sim/faults/15550000001", {"error_rate": 2}))[0] == 400
    assert (await call("PUT", "/_sim/faults/15550000001", {"bogus": 1}))[0] == 400
    assert (await call("PUT", "/_sim/faults/15550000001", {"script": ["explode"]}))[0] == 400
    assert (await call("PUT", "/_sim/faults/15559999999", {}))[0] == 404
    assert (await call("PUT", "/_sim/faults/15550000001~x", {}))[0] == 400
    assert (await call("DELETE", "/_sim/faults/15550000001~2"))[0] == 200
    assert (await call("GET", "/_sim/faults"))[1] == {"plans": {}, "injected": {}}
    transport = InProcessTransport(sim, NUMBER)
    auth = await login(transport)
    status, body = await call("POST", "/_sim/faults/15550000001/revoke")
    assert status == 200 and body == {"revoked": 1}
    assert (await transport.request(b"POST", b"/v1/messages", auth, SEND)).status == 401


async def test_server_acts_out_connection_faults_over_tcp() -> None:
    sim = make_sim()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, sim, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=url) as control:
            resp = await control.put(
                "/_sim/faults/15550000001", json={"script": ["drop", "reset", "error_502"]}
            )
            assert resp.status_code == 200
        pool = H11Pool(url + "/15550000001", max_connections=2, request_timeout=5.0)
        try:
            resp = await pool.request(
                b"POST", b"/v1/users/login", [(b"authorization", b"Basic YWRtaW46UGFzc3cwcmQh")], b""
            )
            token = json.loads(resp.body)["users"][0]["token"]
            auth = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
            with pytest.raises(ResponseLostError):
                await pool.request(b"POST", b"/v1/messages", auth, SEND)
            assert sim.counters(NUMBER).accepted == 1  # acted on, answer lost
            with pytest.raises(ResponseLostError):
                await pool.request(b"POST", b"/v1/messages", auth, SEND)
            assert sim.counters(NUMBER).accepted == 1
            assert (await pool.request(b"POST", b"/v1/messages", auth, SEND)).status == 502
            assert (await pool.request(b"POST", b"/v1/messages", auth, SEND)).status == 201
        finally:
            await pool.aclose()
        nursery.cancel_scope.cancel()
