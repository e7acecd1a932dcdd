"""The app-level Cloud webhook (``/webhooks/cloud``) of one daemon over real HTTP, B = 4: one delivery
naming several numbers (Meta's and pywa's payload shapes, tests/corpus/cloud) is applied to each
number by the phone_number_id it names, in each number's bucket; the signature is checked against
the numbers' app secrets; what names no number of ours is counted, never applied elsewhere."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import trio

from dispatcher.core import ledger
from dispatcher.core.bucketing import bucket_of
from dispatcher.frontdoor.cloud_routes import signature
from dispatcher.service.daemon import Running
from tests.helpers.configs import cloud_table
from tests.helpers.daemon import (
    ADMIN,
    ADMIN_SECTION,
    CLOUD,
    CLOUD_TOKEN,
    CUSTOMER,
    PNID,
    SECRET,
    VERIFY,
    running_daemon,
    sandbox_config,
)
from tests.helpers.messages import create, fetch, wait_status
from tests.helpers.metrics import parse, value
from tests.helpers.templates import WABA, waba_table

CORPUS = Path(__file__).parents[1] / "corpus" / "cloud"
# A second number of the same app, in another bucket; a third of another Meta app.
SECOND, SECOND_PNID = "+15550009998", "106540352242923"
OTHER_APP, OTHER_PNID, OTHER_SECRET = "+15550009997", "106540352242924", "other-app-secret-0123456789"
PATH = "/webhooks/cloud"


def config(data: Path) -> Any:
    second = cloud_table(
        SECOND,
        phone_number_id=SECOND_PNID,
        access_token=CLOUD_TOKEN,
        app_secret=SECRET,
        verify_token="second-verify-0123456789",
        simulated=True,
        waba=WABA,
    )
    other = cloud_table(
        OTHER_APP,
        phone_number_id=OTHER_PNID,
        access_token=CLOUD_TOKEN,
        app_secret=OTHER_SECRET,
        verify_token="other-verify-0123456789",
        simulated=True,
    )
    first = cloud_table(
        CLOUD,
        phone_number_id=PNID,
        access_token=CLOUD_TOKEN,
        app_secret=SECRET,
        verify_token=VERIFY,
        simulated=True,
        waba=WABA,
    )
    # No Graph check at start: its answer (the simulated WABA's tier) would race the account update.
    watch = "[watch]\ncheck_at_start = false\n"
    return sandbox_config(
        data, extra=ADMIN_SECTION + watch + waba_table() + first + second + other, buckets=4
    )


def corpus(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CORPUS / name).read_text())
    assert doc.pop("_source")
    return doc


def entry_for(name: str, pnid: str, display: str, **first: Any) -> dict[str, Any]:
    """The only entry of a corpus file, its change naming ``pnid``; ``first`` replaces keys of the
    first message or status."""
    entry: dict[str, Any] = copy.deepcopy(corpus(name)["entry"][0])
    value = entry["changes"][0]["value"]
    value["metadata"] = {"display_phone_number": display.lstrip("+"), "phone_number_id": pnid}
    for key in ("messages", "statuses"):
        if key in value:
            value[key][0].update(first)
    return entry


def delivery(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": list(entries)}).encode()


def inbound(pnid: str, number: str, wamid: str, text: str) -> dict[str, Any]:
    return entry_for(
        "pywa_message_text.json",
        pnid,
        number,
        id=wamid,
        text={"body": text},
        **{"from": CUSTOMER.lstrip("+")},
    )


async def post(
    client: httpx.AsyncClient, body: bytes, secret: str = SECRET, **headers: str
) -> httpx.Response:
    return await client.post(
        PATH, content=body, headers={"X-Hub-Signature-256": signature(secret, body), **headers}
    )


async def inbound_to(client: httpx.AsyncClient, number: str) -> list[dict[str, Any]]:
    """The customer's messages to ``number`` (the list reads every bucket)."""
    page = (
        await client.get(
            "/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json",
            params={"From": f"whatsapp:{CUSTOMER}", "To": f"whatsapp:{number}"},
        )
    ).json()
    return list(page["messages"])


async def received(client: httpx.AsyncClient, number: str) -> list[str]:
    return [m["body"] for m in await inbound_to(client, number)]


async def received_sids(client: httpx.AsyncClient, number: str) -> list[str]:
    return [m["sid"] for m in await inbound_to(client, number)]


def wamid_of(daemon: Running, sid: str) -> str:
    for store in daemon.buckets.stores:
        raw = store.get(b"messages", ledger.sid_key(sid))
        if raw is not None:
            channel_id = ledger.load(raw).channel_id
            assert channel_id is not None
            return channel_id
    raise AssertionError(sid)


def test_the_numbers_sit_in_different_buckets() -> None:
    assert len({bucket_of(n, 4) for n in (CLOUD, SECOND, OTHER_APP)}) == 3


async def test_the_handshake_takes_any_cloud_numbers_verify_token(tmp_path: Path) -> None:
    async with running_daemon(config(tmp_path / "data")) as (_, client):
        good = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
        for token in (VERIFY, "second-verify-0123456789", "other-verify-0123456789"):
            resp = await client.get(PATH, params={**good, "hub.verify_token": token})
            assert (resp.status_code, resp.text) == (200, "1158201444")
        for bad in (
            {**good, "hub.verify_token": "nope"},
            {**good, "hub.verify_token": ""},
            {**good, "hub.mode": "unsubscribe"},
            {k: v for k, v in good.items() if k != "hub.challenge"},
            {k: v for k, v in good.items() if k != "hub.verify_token"},
        ):
            assert (await client.get(PATH, params=bad)).status_code == 403


async def test_one_delivery_for_several_numbers_applies_each_in_its_bucket_once(tmp_path: Path) -> None:
    async with running_daemon(config(tmp_path / "data")) as (daemon, client):
        assert daemon.simulator is not None
        for pnid in (PNID, SECOND_PNID):
            daemon.simulator.cloud.set_webhook_url(pnid, None)  # the statuses come from this test
        sids = {
            CLOUD: await create(client, CLOUD, CUSTOMER, "one"),
            SECOND: await create(client, SECOND, CUSTOMER, "two"),
        }
        for sid in sids.values():
            await wait_status(client, sid, "sent")
        read = {
            number: entry_for(
                "pywa_message_status_read.json",
                pnid,
                number,
                id=wamid_of(daemon, sids[number]),
                recipient_id=CUSTOMER.lstrip("+"),
            )
            for number, pnid in ((CLOUD, PNID), (SECOND, SECOND_PNID))
        }
        body = delivery(
            read[CLOUD],
            inbound(PNID, CLOUD, "wamid.APP1", "to the first"),
            read[SECOND],
            inbound(SECOND_PNID, SECOND, "wamid.APP2", "to the second"),
            inbound("999999999999", "15559999999", "wamid.APP3", "to nobody here"),
            inbound(OTHER_PNID, OTHER_APP, "wamid.APP4", "signed by the wrong app"),
        )
        for _ in range(2):  # Meta's redelivery: applied once
            resp = await post(client, body)
            assert (resp.status_code, resp.json()) == (200, {})
        assert (await fetch(client, sids[CLOUD]))["status"] == "read"
        assert (await fetch(client, sids[SECOND]))["status"] == "read"
        assert await received(client, CLOUD) == ["to the first"]
        assert await received(client, SECOND) == ["to the second"]
        assert await received(client, OTHER_APP) == []
        for number in (CLOUD, SECOND):  # each in its own bucket
            [sid] = await received_sids(client, number)
            assert daemon.buckets.index_of_sid(sid) == bucket_of(number, 4)
            assert daemon.buckets.stores[bucket_of(number, 4)].get(b"messages", ledger.sid_key(sid))
        samples = parse((await client.get("/metrics", headers=ADMIN, auth=None)).text)
        assert value(samples, "wadispatch_webhook_unapplied_total", reason="unknown_number") == 2
        assert value(samples, "wadispatch_webhook_unapplied_total", reason="unverified") == 2
        assert value(samples, "wadispatch_cloud_app_applied_here_total") == 4  # 2 buckets x 2 deliveries
        assert value(samples, "wadispatch_cloud_app_failed_total") == 0


async def test_a_bad_signature_applies_nothing(tmp_path: Path) -> None:
    async with running_daemon(config(tmp_path / "data")) as (_, client):
        body = delivery(
            inbound(PNID, CLOUD, "wamid.SIG1", "hi"), inbound(SECOND_PNID, SECOND, "wamid.SIG2", "hi")
        )
        assert (await client.post(PATH, content=body)).status_code == 401
        assert (await post(client, body, secret="not-the-app-secret-0123")).status_code == 403
        tampered = await client.post(
            PATH,
            content=body.replace(b'"hi"', b'"yo"'),
            headers={"X-Hub-Signature-256": signature(SECRET, body)},
        )
        assert tampered.status_code == 403
        assert (await post(client, b"{not json")).status_code == 400
        assert (await post(client, b'{"object": "page", "entry": []}')).status_code == 400
        assert await received(client, CLOUD) == [] and await received(client, SECOND) == []
        # Signed by the other app: only its own number's change would apply, and it names none here.
        assert (await post(client, body, secret=OTHER_SECRET)).status_code == 200
        assert await received(client, CLOUD) == [] and await received(client, SECOND) == []


async def test_a_part_applies_only_the_buckets_it_names(tmp_path: Path) -> None:
    """What another daemon asks of this one: the same signed body, the buckets to apply."""
    async with running_daemon(config(tmp_path / "data")) as (_, client):
        body = delivery(
            inbound(PNID, CLOUD, "wamid.P1", "first"), inbound(SECOND_PNID, SECOND, "wamid.P2", "second")
        )
        hop = {"x-wadispatch-forwarded-by": "test"}
        for bad in ("", "x", "9", "-1", "1,,2"):
            resp = await post(client, body, **hop, **{"x-wadispatch-cloud-buckets": bad})
            assert resp.status_code == 400, bad
        part = await post(client, body, **hop, **{"x-wadispatch-cloud-buckets": str(bucket_of(SECOND, 4))})
        assert (part.status_code, part.json()) == (200, {"numbers": [SECOND]})
        assert await received(client, CLOUD) == []
        assert await received(client, SECOND) == ["second"]
        refused = await post(
            client, body, secret="wrong-secret-0123456789", **{"x-wadispatch-cloud-buckets": "1"}
        )
        assert refused.status_code == 403
        assert await received(client, CLOUD) == []


async def test_a_wabas_account_update_goes_with_one_of_its_numbers(tmp_path: Path) -> None:
    async with running_daemon(config(tmp_path / "data")) as (_, client):
        doc = corpus("meta_docs_business_capability_update.json")
        doc["entry"][0]["id"] = WABA
        other = copy.deepcopy(doc["entry"][0])
        other["id"] = "777777777777777"  # a WABA none of our numbers names
        resp = await post(client, delivery(doc["entry"][0], other))
        assert resp.status_code == 200
        with trio.fail_after(10):
            while True:
                status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
                limits = {n["number"]: n["tier_limit"] for n in status["numbers"]}
                if limits[CLOUD] == 2000:
                    break
                await trio.sleep(0.02)
        assert limits[SECOND] == 2000  # the WABA's numbers, applied once as if by CLOUD's own URL
        assert limits[OTHER_APP] != 2000
        samples = parse((await client.get("/metrics", headers=ADMIN, auth=None)).text)
        assert value(samples, "wadispatch_webhook_unapplied_total", reason="unknown_waba") == 1


async def test_the_simulators_signed_status_webhooks_at_the_app_url_move_every_numbers_messages(
    tmp_path: Path,
) -> None:
    """Statuses as the simulator's Meta-like sender signs and posts them, to the one app URL."""
    async with running_daemon(config(tmp_path / "data")) as (daemon, client):
        assert daemon.simulator is not None
        for pnid in (PNID, SECOND_PNID):
            daemon.simulator.cloud.set_webhook_url(pnid, f"{daemon.url}{PATH}")
        sids = [await create(client, number, CUSTOMER, f"via {number}") for number in (CLOUD, SECOND, CLOUD)]
        for sid in sids:
            assert (await wait_status(client, sid, "read"))["error_code"] is None
        samples = parse((await client.get("/metrics", headers=ADMIN, auth=None)).text)
        assert value(samples, "wadispatch_cloud_app_applied_here_total") >= 3
