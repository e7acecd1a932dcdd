"""A daemon with On-Prem and Cloud numbers side by side, against the embedded simulator over real
HTTP: sends, signed Cloud webhooks (GET handshake, signature, dedup across restarts), pywa as a client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from pywa import WhatsApp
from pywa.errors import TooManyMessages

from dispatcher.core import ledger
from dispatcher.frontdoor.cloud_routes import signature
from dispatcher.service.daemon import Running
from dispatcher.webhooks import dedup
from tests.helpers.daemon import (
    ACCOUNT,
    ADMIN,
    ADMIN_SECTION,
    CLOUD,
    CUSTOMER,
    PNID,
    SECRET,
    VERIFY,
    mixed_config,
    running_daemon,
)
from tests.helpers.daemon import CLOUD_TOKEN as TOKEN
from tests.helpers.messages import create, fetch, wait_status
from tests.helpers.metrics import parse, value


def hook_url(daemon: Running) -> str:
    return f"{daemon.url}/webhooks/cloud/{CLOUD.lstrip('+')}"


def envelope(value: dict[str, Any]) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": CLOUD.lstrip("+"), "phone_number_id": PNID},
        **value,
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(body).encode()


def inbound(wamid: str, text: str = "hi") -> bytes:
    digits = CUSTOMER.lstrip("+")
    return envelope(
        {
            "contacts": [{"profile": {"name": "Ada"}, "wa_id": digits, "user_id": "US.1"}],
            "messages": [
                {
                    "from": digits,
                    "id": wamid,
                    "timestamp": "1700000000",
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


async def post_signed(
    client: httpx.AsyncClient, url: str, body: bytes, secret: str = SECRET
) -> httpx.Response:
    return await client.post(url, content=body, headers={"X-Hub-Signature-256": signature(secret, body)})


async def inbound_count(client: httpx.AsyncClient) -> int:
    page = (
        await client.get(
            f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json", params={"From": f"whatsapp:{CUSTOMER}"}
        )
    ).json()
    return len(page["messages"])


async def test_onprem_and_cloud_numbers_deliver_in_one_daemon(tmp_path: Path) -> None:
    async with running_daemon(mixed_config(tmp_path / "data")) as (daemon, client):
        cloud_sid = await create(client, CLOUD, CUSTOMER, "via graph")
        onprem_sid = await create(client, "+15550000001", CUSTOMER, "via on-prem")
        read = await wait_status(client, cloud_sid, "read")  # statuses came back as signed Cloud webhooks
        assert read["error_code"] is None
        await wait_status(client, onprem_sid, "read")
        assert daemon.simulator is not None
        [sent] = daemon.simulator.cloud.received(PNID)
        assert sent["messaging_product"] == "whatsapp" and sent["text"]["body"] == "via graph"
        assert [m.content for m in daemon.simulator.received("+15550000001")] == ["via on-prem"]
        with trio.fail_after(10):  # counted once the simulator's POST has returned
            while daemon.simulator.cloud.counters(PNID).webhooks_sent < 3:  # noqa: ASYNC110 - a counter, not an event
                await trio.sleep(0.02)
        assert daemon.simulator.cloud.counters(PNID).webhooks_sent == 3


async def test_cloud_send_failure_maps_to_the_twilio_code(tmp_path: Path) -> None:
    async with running_daemon(mixed_config(tmp_path / "data")) as (_, client):
        sid = await create(client, CLOUD, "+15559990001", "to nobody")  # not a WhatsApp user
        failed = await wait_status(client, sid, "failed")
        assert failed["error_code"] == 63024


async def test_verification_handshake(tmp_path: Path) -> None:
    async with running_daemon(mixed_config(tmp_path / "data")) as (daemon, client):
        url = hook_url(daemon)
        good = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
        resp = await client.get(url, params=good)
        assert (resp.status_code, resp.text) == (200, "1158201444")
        for bad in (
            {**good, "hub.verify_token": "nope"},
            {**good, "hub.mode": "unsubscribe"},
            {k: v for k, v in good.items() if k != "hub.challenge"},
            {k: v for k, v in good.items() if k != "hub.verify_token"},
        ):
            assert (await client.get(url, params=bad)).status_code == 403
        assert (await client.get(f"{daemon.url}/webhooks/cloud/15550000001", params=good)).status_code == 403


async def test_signatures_are_checked_and_refusals_change_nothing(tmp_path: Path) -> None:
    async with running_daemon(mixed_config(tmp_path / "data")) as (daemon, client):
        url = hook_url(daemon)
        body = inbound("wamid.SIG1")
        assert (await client.post(url, content=body)).status_code == 401
        assert (await post_signed(client, url, body, secret="wrong")).status_code == 403
        tampered = await client.post(
            url, content=body.replace(b"hi", b"yo"), headers={"X-Hub-Signature-256": signature(SECRET, body)}
        )
        assert tampered.status_code == 403
        assert (
            await post_signed(client, f"{daemon.url}/webhooks/cloud/15550000001", body)
        ).status_code == 403
        assert await inbound_count(client) == 0
        assert (await post_signed(client, url, b'{"object": "whatsapp_business_account"}')).status_code == 400
        assert (await post_signed(client, url, body)).status_code == 200
        assert await inbound_count(client) == 1


async def test_redelivered_events_are_applied_once_also_after_a_restart(tmp_path: Path) -> None:
    cfg = mixed_config(tmp_path / "data")
    body = inbound("wamid.DUP1", "only once")
    async with running_daemon(cfg) as (daemon, client):
        url = hook_url(daemon)
        for _ in range(3):
            assert (await post_signed(client, url, body)).status_code == 200
        assert await inbound_count(client) == 1
    async with running_daemon(cfg) as (daemon, client):
        assert dedup.seen(daemon.store, CLOUD, ["m:wamid.DUP1"], daemon.wall.now()) == {"m:wamid.DUP1"}
        assert (await post_signed(client, hook_url(daemon), body)).status_code == 200
        assert await inbound_count(client) == 1
        record = (
            await client.get(
                f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json", params={"From": f"whatsapp:{CUSTOMER}"}
            )
        ).json()
        assert record["messages"][0]["body"] == "only once"


async def test_status_webhooks_move_messages_and_read_implies_delivered(tmp_path: Path) -> None:
    async with running_daemon(mixed_config(tmp_path / "data")) as (daemon, client):
        assert daemon.simulator is not None
        daemon.simulator.cloud.set_webhook_url(PNID, None)  # we post the statuses ourselves
        first, second = (
            await create(client, CLOUD, CUSTOMER, "one"),
            await create(client, CLOUD, "+16505550002", "two"),
        )
        await wait_status(client, first, "sent")
        await wait_status(client, second, "sent")

        def wamid(sid: str) -> str:
            raw = daemon.store.get(b"messages", ledger.sid_key(sid))
            assert raw is not None
            channel_id = ledger.load(raw).channel_id
            assert channel_id is not None
            return channel_id

        def status(sid: str, state: str, **extra: Any) -> bytes:
            return envelope(
                {
                    "statuses": [
                        {
                            "id": wamid(sid),
                            "status": state,
                            "timestamp": "1700000000",
                            "recipient_id": "16505551234",
                            **extra,
                        }
                    ]
                }
            )

        url = hook_url(daemon)
        assert (await post_signed(client, url, status(first, "read"))).status_code == 200
        assert (await fetch(client, first))["status"] == "read"
        assert (await post_signed(client, url, status(first, "delivered"))).status_code == 200
        assert (await fetch(client, first))["status"] == "read"
        errors = [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "More than 24 hours have passed"},
            }
        ]
        assert (await post_signed(client, url, status(second, "failed", errors=errors))).status_code == 200
        failed = await fetch(client, second)
        assert (failed["status"], failed["error_code"]) == ("failed", 63016)


@pytest.mark.parametrize("pair_burst", [1])
async def test_pywa_sends_through_the_simulator_and_reads_its_errors(tmp_path: Path, pair_burst: int) -> None:
    cfg = mixed_config(tmp_path / "data", cloud={"pair_burst": pair_burst})
    async with running_daemon(cfg) as (daemon, _):
        assert daemon.simulator_url is not None

        def with_pywa() -> tuple[str, BaseException | None]:
            wa = WhatsApp(phone_id=PNID, token=TOKEN, api_version="23.0")
            wa.api._session.base_url = f"{daemon.simulator_url}/v23.0"
            sent = wa.send_message(to="16505550001", text="hello from pywa")
            try:
                wa.send_message(to="16505550001", text="too soon")
            except TooManyMessages as exc:
                return sent.id, exc
            return sent.id, None

        wamid, error = await trio.to_thread.run_sync(with_pywa)
        assert wamid.startswith("wamid.")
        assert isinstance(error, TooManyMessages) and error.code == 131056
        assert daemon.simulator is not None
        assert [m["text"]["body"] for m in daemon.simulator.cloud.received(PNID)] == ["hello from pywa"]


async def test_tier_wait_is_visible_in_metrics_and_admin_status(tmp_path: Path) -> None:
    cfg = mixed_config(tmp_path / "data", cloud={"messaging_limit": 1}, extra_sections=ADMIN_SECTION)
    async with running_daemon(cfg) as (_, client):
        first = await create(client, CLOUD, "+16505550001", "first")
        held = await create(client, CLOUD, "+16505550002", "held back")
        await wait_status(client, first, "read")
        with trio.fail_after(10):
            while True:
                samples = parse((await client.get("/metrics")).text)
                if value(samples, "wadispatch_parked_recipients", number=CLOUD) == 1:
                    break
                await trio.sleep(0.02)
        assert value(samples, "wadispatch_tier_recipients_used", number=CLOUD) == 1
        assert value(samples, "wadispatch_tier_recipients_limit", number=CLOUD) == 1
        assert value(samples, "wadispatch_tier_budget_waits_total", number=CLOUD) >= 1
        onprem = ("wadispatch_tier_recipients_limit", (("number", "+15550000001"),))
        assert onprem not in samples  # On-Prem numbers have no tier
        assert (await fetch(client, held))["status"] == "queued"
        status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
        [cloud] = [n for n in status["numbers"] if n["number"] == CLOUD]
        assert (cloud["tier_used"], cloud["tier_limit"], cloud["parked"], cloud["outbox"]) == (1, 1, 1, 1)
