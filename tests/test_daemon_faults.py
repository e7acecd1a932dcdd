"""Faults end to end over real sockets: the simulator's control API injects, the daemon copes."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import trio

from actors.multiconnect import MultiEndpoint
from tests.daemon_harness import messages_path, running_daemon, sandbox_config
from tests.test_daemon import wait_status

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
