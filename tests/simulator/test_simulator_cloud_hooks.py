"""The simulator's Cloud webhooks batched per number (``webhook_batch``), in order per recipient,
signed, and readable by the daemon's Cloud webhook decoder."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from dispatcher.channels import cloud_webhook
from dispatcher.core.clock import TrioWallClock
from dispatcher.simulator.cloud import CloudApi, CloudNumber, sign
from dispatcher.simulator.exchange import SimRequest
from dispatcher.simulator.ids import IdMaker
from tests.helpers.simulator_core import Captured

PNID = "106540352242922"
TOKEN = "EAAsystemuser"
SECRET = "app-secret"
PATH = f"/v23.0/{PNID}/messages"


def make(batch: int, concurrency: int = 1) -> tuple[CloudApi, Captured]:
    captured = Captured()
    api = CloudApi(
        wall_clock=TrioWallClock(start=1_700_000_000.0),
        ids=IdMaker(),
        poster=captured,
        webhook_batch=batch,
        webhook_concurrency=concurrency,
    )
    api.add_number(
        CloudNumber(
            number="+15550783881",
            phone_number_id=PNID,
            access_token=TOKEN,
            app_secret=SECRET,
            webhook_url="http://hooks.example/cloud",
            messaging_limit=None,
        )
    )
    return api, captured


def send(api: CloudApi, to: str) -> str:
    body = json.dumps(
        {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hi"}}
    ).encode()
    resp = api.respond(SimRequest("POST", PATH, {"authorization": f"Bearer {TOKEN}"}, body), PATH)
    assert resp.status == 200, resp.body
    wamid: str = json.loads(resp.body)["messages"][0]["id"]
    return wamid


def statuses(body: bytes) -> list[dict[str, Any]]:
    [entry] = json.loads(body)["entry"]
    [change] = entry["changes"]
    found: list[dict[str, Any]] = change["value"]["statuses"]
    return found


async def test_due_statuses_of_many_messages_share_one_signed_post(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    api, captured = make(batch=100)
    await nursery.start(api.run)
    wamids = [send(api, f"1650000{i:04d}") for i in range(5)]
    await trio.sleep(1.0)
    # sent, delivered and read each fall due together for the five messages: three POSTs.
    assert [[(s["id"], s["status"]) for s in statuses(body)] for _, body, _ in captured.posts] == [
        [(w, stage) for w in wamids] for stage in ("sent", "delivered", "read")
    ]
    assert api.counters(PNID).webhooks_sent == 3
    for _, body, headers in captured.posts:
        assert headers["x-hub-signature-256"] == sign(SECRET, body)
        decoded = cloud_webhook.decode(body, PNID)
        assert len(decoded.events.statuses) == 5 + 5 * (statuses(body)[0]["status"] == "read")
        contacts = json.loads(body)["entry"][0]["changes"][0]["value"]["contacts"]
        assert sorted(c["wa_id"] for c in contacts) == sorted(f"1650000{i:04d}" for i in range(5))


async def test_batch_caps_a_post_and_each_recipient_keeps_its_order(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    api, captured = make(batch=4, concurrency=3)
    await nursery.start(api.run)
    sent = [(send(api, f"1650000{i % 3:04d}"), f"1650000{i % 3:04d}") for i in range(9)]
    await trio.sleep(1.0)
    assert all(len(statuses(body)) <= 4 for _, body, _ in captured.posts)
    seen = [(s["recipient_id"], s["id"], s["status"]) for _, b, _ in captured.posts for s in statuses(b)]
    assert len(seen) == 27
    for wamid, digits in sent:
        assert [st for r, w, st in seen if w == wamid and r == digits] == ["sent", "delivered", "read"]
    for digits in {d for _, d in sent}:
        mine = [w for w, d in sent if d == digits]
        assert [w for r, w, st in seen if r == digits and st == "sent"] == mine


async def test_every_numbers_counters_in_one_request(autojump_clock: trio.testing.MockClock) -> None:
    from dispatcher.simulator.core import Simulator

    sim = Simulator(status_delays=None)
    for pnid in ("111", "222"):
        number = {
            "number": f"+1555000{pnid}0",
            "phone_number_id": pnid,
            "access_token": TOKEN,
            "app_secret": "s",
        }
        assert (
            sim.respond(SimRequest("POST", "/_sim/cloud/numbers", {}, json.dumps(number).encode())).status
            == 201
        )
    body = json.dumps({"messaging_product": "whatsapp", "to": "16500000001", "text": {"body": "hi"}}).encode()
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert sim.respond(SimRequest("POST", "/v23.0/222/messages", headers, body)).status == 200
    every = json.loads(sim.respond(SimRequest("GET", "/_sim/cloud/counters")).body)
    assert {pnid: figures["accepted"] for pnid, figures in every.items()} == {"111": 0, "222": 1}
