"""The simulator emits the shapes the real platform sends (voice notes with codec parameters, Flows
replies, username-only customers, unknown types and statuses, ``errors`` arrays, redeliveries), driven
through its control API, and the daemon applies them end to end: every webhook answered 2xx."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from dispatcher.core import ledger
from dispatcher.core.models import MessageRecord
from dispatcher.service.daemon import Running
from dispatcher.simulator.cloud_hooks import user_id
from tests.helpers.daemon import CLOUD, CUSTOMER, PNID, mixed_config, running_daemon, sandbox_config
from tests.helpers.messages import create, wait_status

ONPREM = "+15550000001"


def by_wamid(daemon: Running, wamid: str) -> MessageRecord | None:
    sid = daemon.store.get(b"wamid", wamid.encode())
    raw = daemon.store.get(b"messages", sid) if sid is not None else None
    return ledger.load(raw) if raw is not None else None


def inbound_records(daemon: Running) -> list[MessageRecord]:
    return [
        r
        for r in (ledger.load(bytes(v)) for _, v in daemon.store.scan(b"messages", b""))
        if r.direction == "inbound"
    ]


def parked(daemon: Running, number: str, wamid: str) -> bool:
    return daemon.store.get(b"meta", b"orphan\x00" + number.encode() + b"\x00" + wamid.encode()) is not None


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - the embedded simulator posts over real HTTP
            await trio.sleep(0.01)


async def stored(daemon: Running, wamid: str) -> MessageRecord:
    await until(lambda: by_wamid(daemon, wamid) is not None)
    record = by_wamid(daemon, wamid)
    assert record is not None
    return record


async def unapplied(client: httpx.AsyncClient, reason: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(f'wadispatch_webhook_unapplied_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_cloud_simulator_shapes_are_applied_end_to_end(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(mixed_config(tmp_path / "d")) as (daemon, client):
            assert daemon.simulator_url is not None
            async with httpx.AsyncClient(base_url=f"{daemon.simulator_url}/_sim/cloud/{PNID}") as sim:

                async def inbound(**fields: Any) -> str:
                    resp = await sim.post("/inbound", json={"from": CUSTOMER, **fields})
                    assert resp.status_code == 201, resp.text
                    wamid: str = resp.json()["id"]
                    return wamid

                # A voice note, delivered three times by Meta: stored once, its codec parameters kept.
                voice = await stored(daemon, await inbound(type="voice", repeat=3))
                assert [m.content_type for m in voice.media] == ["audio/ogg; codecs=opus"]
                flow = await stored(daemon, await inbound(type="flow_reply", body='{"rating": "5"}'))
                assert (flow.body, flow.from_number) == ('{"rating": "5"}', CUSTOMER)
                # A customer who adopted a username: no phone number, addressed by the user id.
                username = await stored(daemon, await inbound(type="text", body="hi", username_only=True))
                assert (username.from_number, username.body) == (user_id(CUSTOMER.lstrip("+")), "hi")
                reaction = await stored(daemon, await inbound(type="reaction", body="\N{THUMBS UP SIGN}"))
                assert reaction.body == "\N{THUMBS UP SIGN}"
                await stored(daemon, await inbound(type="unsupported"))
                future = await stored(daemon, await inbound(type="hologram", body="3d"))
                assert future.body == "3d"
                assert len(inbound_records(daemon)) == 6
                assert await unapplied(client, "unknown_type") == 3  # reaction, unsupported, hologram

                # A status Meta adds later, with an errors array, and one for an id we never sent.
                sid = await create(client, CLOUD, CUSTOMER)
                await wait_status(client, sid, "read")
                record = ledger.load(daemon.store.get(b"messages", ledger.sid_key(sid)) or b"")
                assert record.channel_id is not None
                errors = [{"code": 131000, "title": "Something went wrong"}]
                for status in (
                    {"id": record.channel_id, "status": "bogus_new", "errors": errors},
                    {"id": "wamid.NEVER", "status": "failed", "errors": errors, "repeat": 2},
                ):
                    assert (await sim.post("/status", json=status)).status_code == 202
                await until(lambda: parked(daemon, CLOUD, "wamid.NEVER"))
                with trio.fail_after(10):
                    while await unapplied(client, "unknown_status") < 1:  # noqa: ASYNC110 - over HTTP
                        await trio.sleep(0.01)
                assert ledger.load(daemon.store.get(b"messages", ledger.sid_key(sid)) or b"").status == "read"
                counters = (await sim.get("")).json()
                assert counters["webhooks_failed"] == 0 and counters["webhooks_sent"] >= 11


async def test_onprem_simulator_shapes_are_applied_end_to_end(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "d", simulator_extra="status_webhooks = false")
    with trio.fail_after(60):
        async with running_daemon(cfg) as (daemon, client):
            assert daemon.simulator_url is not None
            async with httpx.AsyncClient(base_url=f"{daemon.simulator_url}/_sim") as sim:

                async def inbound(**fields: Any) -> str:
                    resp = await sim.post("/inbound", json={"number": ONPREM, "from": CUSTOMER, **fields})
                    assert resp.status_code == 201, resp.text
                    wamid: str = resp.json()["messages"][0]["id"]
                    return wamid

                media = {"mime_type": "audio/ogg; codecs=opus", "data": "T2dnUw=="}
                voice = await stored(daemon, await inbound(media=media, type="voice", repeat=2))
                assert (voice.num_media, [m.content_type for m in voice.media]) == (
                    1,
                    ["audio/ogg; codecs=opus"],
                )
                flow = {"type": "nfm_reply", "nfm_reply": {"response_json": '{"flow_token": "t"}'}}
                assert (await stored(daemon, await inbound(interactive=flow))).body == '{"flow_token": "t"}'
                # A recorded shape posted as it is: an unknown message with an errors array.
                unknown = {
                    "errors": [{"code": 501, "title": "Unknown message type"}],
                    "from": "15551234567",
                    "id": "ABGG-UNKNOWN-1",
                    "timestamp": "1700000000",
                    "type": "unknown",
                }
                body = {"number": ONPREM, "body": {"messages": [unknown]}, "repeat": 2}
                assert (await sim.post("/webhook", json=body)).status_code == 202
                assert (await stored(daemon, "ABGG-UNKNOWN-1")).from_number == "+15551234567"
                assert len(inbound_records(daemon)) == 3  # redeliveries stored once

                sid = await create(client, ONPREM, CUSTOMER)
                await until(lambda: by_sid(daemon, sid).channel_id is not None)
                wamid = by_sid(daemon, sid).channel_id
                for status in ("warning_new", "read"):
                    payload = {"number": ONPREM, "id": wamid, "status": status, "repeat": 2}
                    assert (await sim.post("/status", json=payload)).status_code == 202
                await until(lambda: by_sid(daemon, sid).status == "read")
                counters = (await sim.get("/counters")).json()["numbers"][ONPREM]
                assert counters["webhooks_failed"] == 0
                assert await unapplied(client, "unknown_status") == 2  # each redelivery reported


def by_sid(daemon: Running, sid: str) -> MessageRecord:
    return ledger.load(daemon.store.get(b"messages", ledger.sid_key(sid)) or b"")
