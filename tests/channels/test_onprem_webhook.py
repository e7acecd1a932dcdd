"""On-Prem webhook payloads (real shapes, reference section 1.8) -> channel-neutral events."""

from __future__ import annotations

import json

import pytest

from dispatcher.channels.onprem_webhook import WebhookError, decode

CONTACTS = [{"profile": {"name": "Andre"}, "wa_id": "79944067536"}]


def inbound(message: dict[str, object]) -> bytes:
    base = {"from": "79944067536", "id": "ABGGeZRAZ1NvAgo-sO98aw3w7J9b", "timestamp": "1629290741"}
    return json.dumps({"contacts": CONTACTS, "messages": [{**base, **message}]}).encode()


def test_text_message_with_profile_name() -> None:
    events = decode(inbound({"type": "text", "text": {"body": "Great!\nThanks"}}))
    [event] = events.inbound
    assert event.sender == "+79944067536" and event.kind == "text"
    assert event.body == "Great!\nThanks" and event.profile_name == "Andre"
    assert event.timestamp == 1629290741.0 and event.channel_id == "ABGGeZRAZ1NvAgo-sO98aw3w7J9b"


@pytest.mark.parametrize("kind", ["image", "video", "audio", "voice", "document", "sticker"])
def test_media_messages_keep_the_media_id_and_type(kind: str) -> None:
    media = {"id": "d674171b-b912-4d76-9118-e2d571e16f33", "mime_type": "image/jpeg", "sha256": "79bc"}
    if kind in ("image", "video", "document"):
        media["caption"] = "look"
    [event] = decode(inbound({"type": kind, kind: media})).inbound
    assert event.kind == kind
    assert [(m.media_id, m.content_type) for m in event.media] == [
        ("d674171b-b912-4d76-9118-e2d571e16f33", "image/jpeg")
    ]
    assert event.body == ("look" if kind in ("image", "video", "document") else "")


def test_location() -> None:
    loc = {"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Main St 1"}
    [event] = decode(inbound({"type": "location", "location": loc})).inbound
    assert (event.latitude, event.longitude, event.label, event.address) == (
        52.52,
        13.405,
        "Office",
        "Main St 1",
    )


def test_shared_contacts_become_a_readable_body() -> None:
    contacts = [
        {"name": {"formatted_name": "Jane Roe"}, "phones": [{"phone": "+1 555 0100", "type": "CELL"}]}
    ]
    [event] = decode(inbound({"type": "contacts", "contacts": contacts})).inbound
    assert event.body == "Jane Roe +1 555 0100"


def test_quick_reply_button_and_interactive_replies() -> None:
    [button] = decode(inbound({"type": "button", "button": {"text": "Yes", "payload": "YES_1"}})).inbound
    assert (button.body, button.button_text, button.button_payload) == ("Yes", "Yes", "YES_1")
    reply = {"type": "button_reply", "button_reply": {"id": "b-2", "title": "Later"}}
    [inter] = decode(inbound({"type": "interactive", "interactive": reply})).inbound
    assert (inter.body, inter.button_payload) == ("Later", "b-2")
    row = {"type": "list_reply", "list_reply": {"id": "row-7", "title": "Blue", "description": "d"}}
    [listed] = decode(inbound({"type": "interactive", "interactive": row})).inbound
    assert (listed.body, listed.list_id) == ("Blue", "row-7")


def test_reply_context_and_forwarding() -> None:
    ctx = {"id": "gBGGwamid", "from": "15550000001", "forwarded": True}
    [event] = decode(inbound({"type": "text", "text": {"body": "re"}, "context": ctx})).inbound
    assert event.reply_to == "gBGGwamid" and event.forwarded and not event.frequently_forwarded


def test_statuses_map_to_twilio_statuses_and_codes() -> None:
    body = {
        "statuses": [
            {
                "id": "w1",
                "recipient_id": "79944067536",
                "status": "sent",
                "timestamp": "1629293084",
                "conversation": {"id": "73cf"},
                "pricing": {"billable": False, "pricing_model": "NBP"},
            },
            {
                "id": "w2",
                "recipient_id": "91",
                "status": "failed",
                "timestamp": "1670394125",
                "errors": [{"code": 1026, "href": "/docs", "title": "Receiver Incapable"}],
                "type": "message",
            },
            {"id": "w3", "status": "failed", "errors": [{"code": 410, "title": "Message expired"}]},
            {"id": "w4", "status": "deleted", "timestamp": "1"},
            {"id": "w5", "status": "read"},
        ]
    }
    events = decode(json.dumps(body).encode())
    assert [(s.channel_id, s.status, s.error_code) for s in events.statuses] == [
        ("w1", "sent", None),
        ("w2", "failed", 63024),
        ("w3", "undelivered", 63021),
        ("w5", "read", None),
    ]
    assert events.statuses[1].error_message == "Receiver Incapable"
    assert events.ignored == 1


def test_system_errors() -> None:
    events = decode(b'{"errors": [{"code": 501, "title": "Unknown message type", "details": "x"}]}')
    assert [(e.code, e.title) for e in events.errors] == [(501, "Unknown message type")]


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'"statuses"', b'{"statuses": [1'])
def test_only_what_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookError):
        decode(body)


@pytest.mark.parametrize(
    ("body", "reason", "statuses", "inbound"),
    [
        (b'{"statuses": [{"status": "sent"}, {"id": "y", "status": "sent"}]}', "bad_status", 1, 0),
        (b'{"statuses": [{"id": "x", "status": "exploded"}]}', "unknown_status", 0, 0),
        (b'{"statuses": [{"id": "x", "status": "sent", "timestamp": "yesterday"}]}', "bad_field", 1, 0),
        (
            b'{"statuses": "none", "messages": [{"from": "15551234567", "id": "x", "type": "unknown"}]}',
            "bad_field",
            0,
            1,
        ),
        (
            b'{"messages": [{"from": "abc", "id": "x", "type": "text", "text": {"body": "b"}}]}',
            "unstorable_message",
            0,
            0,
        ),
        (b'{"messages": [{"from": "15551234567", "id": "x", "type": "image"}]}', "bad_message", 0, 1),
        (b'{"messages": [{"from": "15551234567", "id": "x", "type": "hologram"}]}', "unknown_type", 0, 1),
        (
            b'{"messages": [{"from": "15551234567", "id": "x", "type": "location",'
            b' "location": {"latitude": 91, "longitude": 0}}]}',
            "bad_message",
            0,
            1,
        ),
    ],
)
def test_what_cannot_be_applied_is_reported_and_the_rest_applies(
    body: bytes, reason: str, statuses: int, inbound: int
) -> None:
    events = decode(body)
    assert reason in [u.reason for u in events.unapplied]
    assert (len(events.statuses), len(events.inbound)) == (statuses, inbound)


def test_an_unknown_message_with_errors_is_stored_as_unknown() -> None:
    # Meta's On-Prem docs: a type WhatsApp cannot show arrives as "unknown" with an errors array.
    body = {
        "messages": [
            {
                "errors": [
                    {
                        "code": 501,
                        "details": "Message type is not currently supported",
                        "title": "Unknown message type",
                    }
                ],
                "from": "16315551234",
                "id": "ABGGFRBzFymPAgo6N9KKs7HsN6eB",
                "timestamp": "1518694708",
                "type": "unknown",
            }
        ]
    }
    events = decode(json.dumps(body).encode())
    [event] = events.inbound
    assert (event.kind, event.sender, event.body) == ("unknown", "+16315551234", "")
    assert [u.reason for u in events.unapplied] == ["unknown_type"]


@pytest.mark.parametrize(
    ("recipient", "digits"),
    [("15551230001", "15551230001"), ("+1 555-123-0001", "15551230001"), ("\uff11\uff12", ""), ("", "")],
    ids=["digits", "formatted", "fullwidth-digits", "empty"],
)
def test_status_recipient_is_read_as_ascii_digits(recipient: str, digits: str) -> None:
    body = {"statuses": [{"id": "wamid.1", "status": "sent", "timestamp": "1", "recipient_id": recipient}]}
    [event] = decode(json.dumps(body).encode()).statuses
    assert event.recipient == digits


@pytest.mark.parametrize(
    "timestamp",
    ["", "-1", "1.5", "1234567890123", "\uff11", " 1", "yesterday"],
    ids=["empty", "negative", "decimal", "13-digits", "fullwidth", "space", "word"],
)
def test_a_bad_status_timestamp_is_reported_and_the_status_still_applies(timestamp: str) -> None:
    good = {"id": "wamid.ok", "status": "sent", "timestamp": "123456789012"}
    bad = {"id": "wamid.bad", "status": "read", "timestamp": timestamp}
    events = decode(json.dumps({"statuses": [good, bad]}).encode())
    assert [s.channel_id for s in events.statuses] == ["wamid.ok", "wamid.bad"]
    [unapplied] = events.unapplied
    assert (unapplied.reason, unapplied.where) == ("bad_field", "statuses[1].timestamp")
