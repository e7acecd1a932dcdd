"""Real webhook payloads from public sources (tests/corpus/, each file's ``_source``), signed and posted
to a real daemon: every one is answered 200 and applied as it says; nothing is refused.

Cloud payloads are posted as recorded except ``metadata.phone_number_id``, set to the test number's
(recorded payloads carry their author's ids or placeholders; a change for another id is never applied,
tested in test_cloud_webhook_decode). Statuses are posted after a message of the number with that
channel id exists, so each must move it as the status says.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from dispatcher.core import ledger
from dispatcher.core.bucketing import slot_of
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.store import WriteTxn
from dispatcher.frontdoor.cloud_routes import signature
from dispatcher.service.daemon import Running
from tests.helpers.daemon import ACCOUNT, CLOUD, PNID, SECRET, mixed_config, running_daemon

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
CLOUD_FILES = sorted((CORPUS / "cloud").glob("*.json"))
ONPREM_FILES = sorted((CORPUS / "onprem").glob("*.json"))
ONPREM_NUMBER = "+15550000001"
ONPREM_HOOK = "/webhooks/onprem/15550000001/hook-1-secret-0123"
MEDIA = {"image", "video", "audio", "voice", "document", "sticker"}
PHONE = re.compile(r"^\+?[1-9][0-9]{6,14}$")
BSUID = re.compile(r"^[A-Z]{2}\.[A-Za-z0-9.]+$")
# Twilio status a WhatsApp status must leave the message in (from "sent").
EXPECTED = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
# A real shape is always read at the envelope and status level: these reasons would mean it was not.
NEVER_FOR_REAL_SHAPES = {"bad_value", "bad_entry", "bad_change", "bad_status", "bad_contact", "bad_error"}


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    assert doc.pop("_source"), f"{path.name}: every corpus file names its source"
    return doc


def values(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``value`` of every ``messages`` change (Cloud), or the flat body (On-Prem)."""
    if "entry" not in doc:
        return [doc]
    return [
        change["value"]
        for entry in doc["entry"]
        for change in entry.get("changes", [])
        if change.get("field") == "messages"
    ]


def storable(value: dict[str, Any], message: dict[str, Any]) -> bool:
    """A message with an id and a customer we can address (phone, or a user id) must be stored."""
    if not isinstance(message.get("id"), str) or not message["id"]:
        return False
    sender = message.get("from")
    user_ids = [c["user_id"] for c in value.get("contacts", []) if c.get("user_id")]
    return bool(
        (isinstance(sender, str) and (PHONE.match(sender) or BSUID.match(sender))) or len(user_ids) == 1
    )


async def seed(daemon: Running, number: str, channel_id: str) -> str:
    """A message ``number`` sent, known by ``channel_id``, in status ``sent``."""
    record = MessageRecord(
        sid=new_sid("SM", slot_of(number)),
        account_sid=ACCOUNT,
        from_number=number,
        to_number="+16505551234",
        body="seeded",
        status="sent",
        channel_id=channel_id,
    )

    def fn(txn: WriteTxn) -> None:
        ledger.insert(txn, record)
        txn.put(b"wamid", channel_id.encode(), record.sid.encode())

    await daemon.store.write(fn)
    return record.sid


def record_by_wamid(daemon: Running, channel_id: str) -> MessageRecord | None:
    sid = daemon.store.get(b"wamid", channel_id.encode())
    raw = daemon.store.get(b"messages", sid) if sid is not None else None
    return ledger.load(raw) if raw is not None else None


async def post_and_check(daemon: Running, number: str, doc: dict[str, Any], post: Any) -> None:
    statuses = [s for v in values(doc) for s in v.get("statuses", [])]
    seeded = {s["id"]: await seed(daemon, number, s["id"]) for s in statuses}
    with capture_logs() as logs:
        status = await post(json.dumps(doc).encode())
    assert status == 200
    reasons = {e["reason"] for e in logs if e["event"] == "webhook.unapplied"}
    assert not reasons & NEVER_FOR_REAL_SHAPES, reasons
    for value in values(doc):
        for message in value.get("messages", []):
            stored = record_by_wamid(daemon, message["id"]) if isinstance(message.get("id"), str) else None
            if storable(value, message):
                assert stored is not None and stored.direction == "inbound", message["id"]
                assert stored.to_number == number
                text = message.get("text", {}).get("body") if isinstance(message.get("text"), dict) else None
                if text is not None:
                    assert stored.body == text
                media = message.get(message.get("type", ""))
                if message.get("type") in MEDIA and isinstance(media, dict) and "mime_type" in media:
                    # Voice notes come as "audio/ogg; codecs=opus": kept whole, served as such.
                    assert [(m.channel_media_id, m.content_type) for m in stored.media] == [
                        (media["id"], media["mime_type"])
                    ]
                flow = message.get("interactive", {}).get("nfm_reply")
                if flow is not None:  # a WhatsApp Flows reply: the customer's answers are the body
                    assert stored.body == flow["response_json"]
    for item in statuses:
        record = record_by_wamid(daemon, item["id"])
        assert record is not None and record.sid == seeded[item["id"]]
        assert record.status == EXPECTED.get(item["status"], "sent"), item
        if item["status"] == "failed":
            assert record.error_code is not None


def test_the_corpus_is_there_and_names_its_sources() -> None:
    assert len(CLOUD_FILES) >= 40 and len(ONPREM_FILES) >= 15
    for path in [*CLOUD_FILES, *ONPREM_FILES]:
        source = json.loads(path.read_text())["_source"]
        assert source.startswith(("https://", "/work/shared/reference", "On-Prem", "contacts[]")), path.name


@pytest.mark.parametrize("path", CLOUD_FILES, ids=lambda p: p.stem)
async def test_each_cloud_payload_is_applied_and_answered_200(tmp_path: Path, path: Path) -> None:
    doc = load(path)
    for value in values(doc):
        value.setdefault("metadata", {})["phone_number_id"] = PNID
    url = f"/webhooks/cloud/{CLOUD.lstrip('+')}"
    with trio.fail_after(30):
        async with running_daemon(mixed_config(tmp_path / "d")) as (daemon, client):

            async def post(body: bytes) -> int:
                headers = {"X-Hub-Signature-256": signature(SECRET, body), "Content-Type": "application/json"}
                return (await client.post(url, content=body, headers=headers)).status_code

            await post_and_check(daemon, CLOUD, doc, post)
            # Meta's redelivery of the same batch is answered 200 and changes nothing more.
            before = list(daemon.store.scan(b"messages", b""))
            assert await post(json.dumps(doc).encode()) == 200
            assert list(daemon.store.scan(b"messages", b"")) == before


@pytest.mark.parametrize("path", ONPREM_FILES, ids=lambda p: p.stem)
async def test_each_onprem_payload_is_applied_and_answered_200(tmp_path: Path, path: Path) -> None:
    doc = load(path)
    with trio.fail_after(30):
        async with running_daemon(mixed_config(tmp_path / "d")) as (daemon, client):

            async def post(body: bytes) -> int:
                return (await client.post(ONPREM_HOOK, content=body)).status_code

            await post_and_check(daemon, ONPREM_NUMBER, doc, post)
