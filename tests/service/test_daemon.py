"""End to end over real sockets: front door -> LMDB -> actor -> simulator -> webhook -> status."""

from __future__ import annotations

from pathlib import Path

import trio

from dispatcher.core import ledger
from tests.helpers.daemon import ACCOUNT, messages_path, running_daemon, sandbox_config
from tests.helpers.messages import wait_status


async def test_send_reaches_the_simulator_and_status_advances(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            resp = await client.post(
                messages_path(),
                data={"From": "whatsapp:+15550000001", "To": "whatsapp:+15551234567", "Body": "Hello!"},
            )
            assert resp.status_code == 201, resp.text
            msg = resp.json()
            assert msg["status"] == "queued" and msg["sid"].startswith("SM") and len(msg["sid"]) == 34
            assert msg["from"] == "whatsapp:+15550000001" and msg["to"] == "whatsapp:+15551234567"
            assert msg["account_sid"] == ACCOUNT and msg["num_segments"] == "1"
            # Accepted means durable: the record is in LMDB when the 201 arrives.
            assert daemon.store.get(b"messages", ledger.sid_key(msg["sid"])) is not None
            final = await wait_status(client, msg["sid"], "read")
            assert final["date_sent"] is not None
            assert daemon.simulator is not None
            received = daemon.simulator.received("+15550000001")
            assert [(r.recipient, r.content) for r in received] == [("15551234567", "Hello!")]


async def test_invalid_recipient_fails_with_63003(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (_, client):
            resp = await client.post(
                messages_path(),
                data={"From": "whatsapp:+15550000002", "To": "whatsapp:+15559990001", "Body": "Hi"},
            )
            final = await wait_status(client, resp.json()["sid"], "failed")
            assert final["error_code"] == 63003


async def test_undelivered_messages_survive_a_restart(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "data", rate=1.0, burst=1)
    with trio.fail_after(60):
        async with running_daemon(cfg) as (daemon, client):
            sids = []
            for i in range(8):
                resp = await client.post(
                    messages_path(),
                    data={"From": "whatsapp:+15550000003", "To": "whatsapp:+15551230000", "Body": f"m{i}"},
                )
                assert resp.status_code == 201
                sids.append(resp.json()["sid"])
        # Stopped after a burst of 1 at 1/s: most are still in the outbox.
        async with running_daemon(cfg) as (daemon, client):
            for sid in sids:
                # A message sent just before the stop may never see its later webhooks
                # (the first run's simulator is gone): "sent" is enough to count as delivered.
                await wait_status(client, sid, "sent", "delivered", "read", timeout=30)
            assert daemon.simulator is not None
            bodies = [r.content for r in daemon.simulator.received("+15550000003")]
            # The second simulator saw only what the first run had not sent, in order.
            assert bodies == [f"m{i}" for i in range(8)][8 - len(bodies) :]
            assert len(bodies) >= 5
