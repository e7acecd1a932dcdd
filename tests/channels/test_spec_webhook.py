"""Spec webhooks read real payloads (LINE's SDK recording, Vonage's documented DLR, Twilio's
callback fields) and Cloud's recorded statuses as the hand-written decoder reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from dispatcher.channels import cloud_webhook
from dispatcher.channels.spec_webhook import SpecWebhook
from dispatcher.channels.webhook_items import WebhookError
from dispatcher.core.channelspec import signing
from dispatcher.core.channelspec.load import load_registry

CORPUS = Path(__file__).parents[1] / "corpus"


def reader(kind: str) -> SpecWebhook:
    loaded = load_registry().get(kind)
    assert loaded is not None
    return SpecWebhook(loaded)


def payload(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CORPUS / "specs" / name).read_text())
    del doc["_source"]
    return doc


def test_line_message_events_become_inbound_messages() -> None:
    doc = payload("line_bot_sdk_webhook.json")
    decoded = reader("line").decode(json.dumps(doc).encode())
    events = decoded.events
    messages = [e for e in doc["events"] if e["type"] == "message" and "userId" in e["source"]]
    assert [m.kind for m in events.inbound] == [
        "text", "video", "audio", "location", "sticker", "text", "document", "image",
    ]  # fmt: skip
    assert len(events.inbound) == len(messages)
    first = events.inbound[0]
    assert first.sender == "U206d25c2ea6bd87c17655609a1c37cb8" and first.body == "Hello, world"
    assert first.timestamp == 1462629479.859
    assert [m.media[0].media_id for m in events.inbound if m.media] == [
        "325708",
        "325708",
        "325708",
        "354718705033693861",
    ]
    assert not events.inbound[3].media  # a location has no file
    # The room's image names no user: noted, the rest still applies; follow/undefined are not messages.
    assert [u.reason for u in events.unapplied] == ["bad_message"]
    assert decoded.inbound_keys == [m.channel_id for m in events.inbound]


def test_line_signatures_are_base64_hmac_sha256_of_the_body() -> None:
    line = reader("line")
    body = b'{"destination":"U123","events":[]}'
    good = signing.signature(line.signature, "channel-secret", body)
    assert line.authentic("channel-secret", good, body, "https://gw.example/x")
    assert not line.authentic("channel-secret", good, body + b" ", "https://gw.example/x")
    assert not line.authentic("", good, body, "https://gw.example/x")  # an empty secret signs nothing
    assert not line.authentic("channel-secret", None, body, "https://gw.example/x")


def test_vonage_receipts_map_to_twilio_statuses_and_codes() -> None:
    vonage = reader("vonage-sms")
    dlr = payload("vonage_dlr_delivered.json")
    [status] = vonage.decode(json.dumps(dlr).encode()).events.statuses
    assert (status.channel_id, status.status, status.recipient) == (
        "0B00000127FDBC63",
        "delivered",
        "447547232824",
    )
    failed = {**dlr, "status": "failed", "err-code": "3"}
    [lost] = vonage.decode(json.dumps(failed).encode()).events.statuses
    assert (lost.status, lost.error_code) == ("undelivered", 30005)
    rejected = {**dlr, "status": "rejected", "err-code": "6"}
    assert vonage.decode(json.dumps(rejected).encode()).events.statuses[0].error_code == 30007
    pending = vonage.decode(json.dumps({**dlr, "status": "unknown"}).encode()).events
    assert not pending.statuses and pending.ignored == 1
    odd = vonage.decode(json.dumps({**dlr, "status": "teleported"}).encode()).events
    assert [u.reason for u in odd.unapplied] == ["unknown_status"]


def test_vonage_inbound_sms_has_its_sender_as_e164() -> None:
    [message] = (
        reader("vonage-sms").decode(json.dumps(payload("vonage_inbound_sms.json")).encode()).events.inbound
    )
    assert message.sender == "+447700900001" and message.body == "Hello world" and message.kind == "text"
    assert message.timestamp == 1577887200.0  # 2020-01-01 14:00:00 UTC


def test_twilio_callbacks_keep_twilio_codes_and_verify_with_the_sdk_signature() -> None:
    twilio = reader("twilio-sms")
    params = payload("twilio_status_undelivered.json")
    body = urlencode(params).encode()
    [status] = twilio.decode(body).events.statuses
    assert (status.status, status.error_code) == ("undelivered", 30005)
    url = "https://gw.example.com/webhooks/channel/twilio-sms/15550008888"
    token = "upstream-auth-token-0123456789"
    sdk = RequestValidator(token).compute_signature(url, params)
    assert twilio.authentic(token, sdk, body, url)
    assert not twilio.authentic(token, sdk, body, url + "?x=1")
    inbound = {"MessageSid": "SM" + "3" * 32, "SmsStatus": "received", "From": "+447700900123", "Body": "hi"}
    [message] = twilio.decode(urlencode(inbound).encode()).events.inbound
    assert message.sender == "+447700900123" and message.body == "hi"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff"])
def test_a_body_that_is_no_document_is_refused_whole(body: bytes) -> None:
    with pytest.raises(WebhookError):
        reader("line").decode(body)


def cloud_files() -> list[Path]:
    """Recorded statuses and texts; a group's status stays the hand-written decoder's (a read by
    one participant is reported per participant, which the spec does not say)."""
    files = [
        *(CORPUS / "cloud").glob("pywa_message_status_*.json"),
        *(CORPUS / "cloud").glob("pywa_message_text*.json"),
    ]
    return sorted(f for f in files if "group" not in f.stem)


@pytest.mark.parametrize("path", cloud_files(), ids=lambda p: p.stem)
def test_the_cloud_spec_reads_recorded_statuses_and_texts_as_the_hand_written_decoder(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc.pop("_source", None)
    body = json.dumps(doc).encode()
    hand = cloud_webhook.decode(body, cloud_pnid(doc)).events
    spec = reader("whatsapp-cloud").decode(body).events
    assert [(s.channel_id, s.status, s.recipient) for s in spec.statuses] == [
        (s.channel_id, s.status, s.recipient) for s in hand.statuses
    ]
    texts = [m for m in hand.inbound if m.kind == "text"]
    assert [(m.channel_id, m.sender.lstrip("+"), m.body) for m in spec.inbound if m.kind == "text"] == [
        (m.channel_id, m.sender.lstrip("+"), m.body) for m in texts
    ]


def cloud_pnid(doc: dict[str, Any]) -> str:
    value = doc["entry"][0]["changes"][0]["value"]
    return str(value.get("metadata", {}).get("phone_number_id", ""))
