"""Batch items beyond plain text: templates, services, validity and schedules, judged like single creates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import trio

from dispatcher.frontdoor.batch import BatchItem
from tests.helpers.daemon import messages_path, running_daemon, sandbox_config
from tests.messages.test_whatsapp_http import ADMIN, EXTRA, FROM, SERVICE, TEMPLATE, TO

FORM_NAMES = {
    "to": "To",
    "from": "From",
    "body": "Body",
    "status_callback": "StatusCallback",
    "content_sid": "ContentSid",
    "content_variables": "ContentVariables",
    "messaging_service_sid": "MessagingServiceSid",
    "validity_period": "ValidityPeriod",
    "send_at": "SendAt",
    "schedule_type": "ScheduleType",
}


def as_form(item: dict[str, Any]) -> dict[str, str]:
    """The same message as a single create's form (ContentVariables as its JSON text)."""
    return {FORM_NAMES[k]: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in item.items()}


async def single(client: httpx.AsyncClient, item: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post(messages_path(), data=as_form(item))
    body = resp.json()
    return resp.status_code, body.get("code", body.get("status"))


async def test_rich_items_get_the_single_creates_outcome_in_order(tmp_path: Path) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d", extra=EXTRA)) as (daemon, client):
            added = await client.post("/admin/v1/templates", json=TEMPLATE, headers=ADMIN, auth=None)
            template = added.json()["sid"]
            variables = {"1": "Ada", "2": "#42"}
            items: list[dict[str, Any]] = [
                {"to": TO, "from": FROM, "body": "plain"},
                {"to": TO, "from": FROM, "content_sid": template, "content_variables": variables},
                {"to": TO, "from": FROM, "content_sid": template, "content_variables": '{"1":"Bo","2":"#7"}'},
                {"to": TO, "messaging_service_sid": SERVICE, "body": "by service"},
                {"to": TO, "from": FROM, "body": "soon or never", "validity_period": 60},
                {
                    "to": TO,
                    "messaging_service_sid": SERVICE,
                    "body": "later",
                    "send_at": later,
                    "schedule_type": "fixed",
                },
                {"to": TO, "from": FROM, "content_sid": "HX" + "9" * 32},  # unknown template
                {"to": TO, "from": FROM, "body": "x", "content_variables": variables},  # no ContentSid
                {"to": TO, "from": FROM, "body": "x", "validity_period": 0},
                {"to": TO, "messaging_service_sid": "MG" + "d" * 32, "body": "x"},  # unknown service
                {
                    "to": TO,
                    "from": FROM,
                    "body": "x",
                    "send_at": later,
                    "schedule_type": "fixed",
                },  # no service
                {"to": "whatsapp:555", "from": FROM, "body": "plain and bad"},
            ]
            resp = await client.post("/v1/messages:batch", json=items)
            assert resp.status_code == 200, resp.text
            out = resp.json()
            results = out["results"]
            assert (out["accepted"], out["rejected"]) == (6, 6)
            got = [(400, r["error"]["code"]) if "error" in r else (201, r["status"]) for r in results]
            expected = [await single(client, item) for item in items]
            assert got == expected
            assert [g[1] for g in got[:6]] == ["queued"] * 5 + ["scheduled"]

            fetched = [(await client.get(messages_path(r["sid"]))).json() for r in results[:6]]
            assert fetched[1]["body"] == "Hi Ada, your order #42 has shipped."
            assert fetched[2]["body"] == "Hi Bo, your order #7 has shipped."
            assert fetched[3]["messaging_service_sid"] == SERVICE
            assert fetched[3]["from"] in ("whatsapp:+15550000001", "whatsapp:+15550000002")
            assert fetched[5]["status"] == "scheduled"
            assert daemon.scheduler.pending() >= 2  # the batch's and the single create's


async def test_media_and_unknown_fields_reject_the_whole_batch(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "d", extra=EXTRA)) as (daemon, client):
            before = daemon.store.entries(b"messages")
            for field, value in (("media_url", ["https://x.io/a.jpg"]), ("content_variables", 5)):
                items = [{"to": TO, "from": FROM, "body": "ok"}, {"to": TO, "from": FROM, field: value}]
                resp = await client.post("/v1/messages:batch", json=items)
                assert resp.status_code == 400 and "$[1]" in resp.json()["message"], resp.text
            assert daemon.store.entries(b"messages") == before


def test_plain_items_are_told_apart() -> None:
    assert BatchItem(to=TO, from_=FROM, body="b", status_callback="https://c.example/s").is_plain()
    assert not BatchItem(to=TO, content_sid="HX" + "1" * 32).is_plain()
    assert not BatchItem(to=TO, messaging_service_sid=SERVICE).is_plain()
    request = BatchItem(
        to=TO, content_sid="HX1", content_variables={"1": "a"}, validity_period=5
    ).send_request()
    assert (request.content_variables, request.validity_period) == ('{"1":"a"}', "5")
