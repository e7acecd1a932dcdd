"""Faults end to end over real sockets: the simulator's control API injects, the daemon copes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import msgspec
import trio

from actors.multiconnect import MultiEndpoint
from dispatcher.core import ledger
from dispatcher.core.store import Store, StoreFullError, WriteTxn, number_key
from dispatcher.simulator.faults import FaultPlan
from tests.helpers.daemon import messages_path, running_daemon, sandbox_config
from tests.helpers.messages import wait_status

FROM = "whatsapp:+15550000001"


async def test_webhooks_duplicated_and_reordered_still_end_read(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            assert daemon.simulator_url is not None
            async with httpx.AsyncClient(base_url=daemon.simulator_url) as control:
                plan = {"webhook_duplicate_rate": 1.0, "webhook_reorder_rate": 0.5, "webhook_delay": 0.2}
                resp = await control.put("/_sim/faults/15550000001", json=plan)
                assert resp.status_code == 200, resp.text
            sids = []
            for i in range(10):
                resp = await client.post(
                    messages_path(), data={"From": FROM, "To": f"whatsapp:+1555123{i:04d}", "Body": f"m{i}"}
                )
                sids.append(resp.json()["sid"])
            for sid in sids:
                final = await wait_status(client, sid, "read")
                assert final["error_code"] is None
            assert daemon.simulator is not None
            injected = daemon.simulator.faults.injected["15550000001"]
            assert injected["webhook_duplicate"] >= 10 and injected["webhook_delay"] == 10


async def test_a_multiconnect_endpoint_down_over_tcp(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "data")
    numbers = [msgspec.structs.replace(n, simulated_endpoints=2) for n in cfg.numbers]
    cfg = msgspec.structs.replace(cfg, numbers=numbers)
    with trio.fail_after(30):
        async with running_daemon(cfg) as (daemon, client):
            assert daemon.simulator_url is not None and daemon.simulator is not None
            async with httpx.AsyncClient(base_url=daemon.simulator_url) as control:
                assert (
                    await control.put("/_sim/faults/15550000001~0", json={"down": True})
                ).status_code == 200
            sids = []
            for i in range(20):
                resp = await client.post(
                    messages_path(), data={"From": FROM, "To": f"whatsapp:+1555123{i:04d}", "Body": f"m{i}"}
                )
                sids.append(resp.json()["sid"])
            for sid in sids:
                await wait_status(client, sid, "sent", "delivered", "read")
            received = sorted(str(m.content) for m in daemon.simulator.received("+15550000001"))
            assert received == sorted(f"m{i}" for i in range(20))  # each exactly once
            actor = daemon.supervisor.actor("+15550000001")
            assert actor is not None
            transport = actor._transport
            assert isinstance(transport, MultiEndpoint)
            assert [s.healthy for s in transport.statistics()] == [False, True]


async def test_429s_and_a_degraded_number_show_in_metrics_and_health(tmp_path: Path) -> None:
    from tests.helpers.metrics import parse, value

    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            assert daemon.simulator is not None
            daemon.simulator.faults.set("15550000001", FaultPlan(script=["throttle", "throttle"]))
            resp = await client.post(
                messages_path(), data={"From": FROM, "To": "whatsapp:+15551230000", "Body": "x"}
            )
            await wait_status(client, resp.json()["sid"], "sent", "delivered", "read")
            daemon.supervisor.mark_degraded("+15550000002", "token revoked (error 190)")
            samples = parse((await client.get("/metrics")).text)
            assert value(samples, "wadispatch_rate_limited_total", number="+15550000001") == 2
            assert value(samples, "wadispatch_number_degraded", number="+15550000002") == 1
            assert value(samples, "wadispatch_number_degraded", number="+15550000001") == 0
            assert value(samples, "wadispatch_send_rate", number="+15550000001") < 20.0  # slowed by the 429s
            health = await client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["degraded"] == {"+15550000002": "credentials"}  # a code, never the detail
            assert "details" not in health.json() and "190" not in health.text
            assert health.json()["numbers"]["+15550000002"] == "degraded"


async def test_a_full_store_answers_503_and_writes_nothing(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "data")
    cfg = msgspec.structs.replace(cfg, store=msgspec.structs.replace(cfg.store, map_size_mb=4))
    with trio.fail_after(30):
        async with running_daemon(cfg) as (daemon, client):
            # Fill the map to the brim, in ever smaller pieces.
            index = 0
            for size in (256 << 10, 16 << 10, 2 << 10, 256):
                while True:
                    key, value = b"filler%d" % index, os.urandom(size)
                    index += 1

                    def fill(txn: WriteTxn, key: bytes = key, value: bytes = value) -> None:
                        txn.put(b"meta", key, value)

                    try:
                        await daemon.store.write(fill)
                    except StoreFullError:
                        break
            before = daemon.store.count(b"messages", b"")
            resp = await client.post(
                messages_path(), data={"From": FROM, "To": "whatsapp:+15551230000", "Body": "z" * 1600}
            )
            assert resp.status_code == 503
            assert resp.json()["code"] == 20503 and "could not be stored" in resp.json()["message"]
            # Nothing half-written: no record, no outbox entry, no listing entry.
            assert daemon.store.count(b"messages", b"") == before
            assert daemon.store.count(b"outbox", number_key("+15550000001")) == 0


async def test_sigterm_under_load_drains_in_flight_and_keeps_the_rest(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "data", rate=1000.0, burst=1000)
    sids = []
    with trio.fail_after(60):
        async with running_daemon(cfg) as (daemon, client):
            assert daemon.simulator is not None
            # Every send takes 1.5 s: at shutdown some are in flight, most not yet started.
            daemon.simulator.faults.set("15550000001", FaultPlan(latency=1.5))
            for i in range(300):
                resp = await client.post(
                    messages_path(), data={"From": FROM, "To": f"whatsapp:+1555123{i:04d}", "Body": f"m{i}"}
                )
                assert resp.status_code == 201
                sids.append(resp.json()["sid"])
            await trio.sleep(0.5)
            stopping_at = trio.current_time()
        # running_daemon set shutdown and waited for the daemon to stop.
        assert trio.current_time() - stopping_at < 1.0 + 2.0 + 2.0  # graceful + drain_timeout + slack
        delivered = {str(m.content) for m in daemon.simulator.received("+15550000001")}
    store = Store(tmp_path / "data")
    try:
        outbox = store.count(b"outbox", number_key("+15550000001"))
        statuses = [ledger.load(store.get(b"messages", ledger.sid_key(sid)) or b"").status for sid in sids]
    finally:
        store.close_env()
    sent = sum(1 for status in statuses if status in ("sent", "delivered", "read"))
    assert outbox == statuses.count("queued") and outbox > 0  # the rest waits for the next start
    assert sent + outbox == 300 and "failed" not in statuses
    assert len(delivered) >= sent  # every "sent" reached WhatsApp (in flight at the cut-off: ambiguous)
