"""Cloud webhook envelopes (reference section 2.6) -> channel-neutral events, with dedup keys."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.channels.cloud_webhook import decode, digits_of
from dispatcher.channels.onprem_webhook import WebhookError

PNID = "106540352242922"


def envelope(value: dict[str, Any], *, field: str = "messages", pnid: str = PNID) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
        **value,
    }
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": field, "value": value}]}],
        }
    ).encode()


def status(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "wamid.OUT1",
        "status": state,
        "timestamp": "1698266945",
        "recipient_id": "16505551234",
        **extra,
    }


def test_inbound_text_with_bsuid_contacts() -> None:
    body = envelope(
        {
            "contacts": [
                {"profile": {"name": "Ada"}, "wa_id": "16505551234", "user_id": "US.13491208655302741918"}
            ],
            "messages": [
                {
                    "from": "16505551234",
                    "id": "wamid.IN1",
                    "timestamp": "1697043223",
                    "type": "text",
                    "text": {"body": "Hi"},
                }
            ],
        }
    )
    decoded = decode(body, PNID)
    [event] = decoded.events.inbound
    assert (event.sender, event.body, event.profile_name, event.channel_id) == (
        "+16505551234",
        "Hi",
        "Ada",
        "wamid.IN1",
    )
    assert decoded.inbound_keys == ["m:wamid.IN1"]


def test_read_implies_delivered() -> None:
    decoded = decode(envelope({"contacts": [{"wa_id": "16505551234"}], "statuses": [status("read")]}), PNID)
    assert [(s.channel_id, s.status) for s in decoded.events.statuses] == [
        ("wamid.OUT1", "delivered"),
        ("wamid.OUT1", "read"),
    ]
    assert decoded.status_keys == ["s:wamid.OUT1:delivered", "s:wamid.OUT1:read"]


@pytest.mark.parametrize(
    ("code", "twilio"), [(131047, 63016), (131026, 63024), (131049, 63049), (4242, 30008)]
)
def test_failed_status_maps_the_cloud_code(code: int, twilio: int) -> None:
    errors = [
        {"code": code, "title": "Re-engagement message", "message": "m", "error_data": {"details": "d"}}
    ]
    [event] = decode(envelope({"statuses": [status("failed", errors=errors)]}), PNID).events.statuses
    assert (event.status, event.error_code, event.error_message) == (
        "failed",
        twilio,
        "Re-engagement message",
    )


def test_failed_without_errors_is_generic() -> None:
    [event] = decode(envelope({"statuses": [status("failed")]}), PNID).events.statuses
    assert event.error_code == 30008


def test_contacts_without_user_id_and_status_without_contacts_are_fine() -> None:
    decoded = decode(envelope({"statuses": [status("sent"), status("delivered")]}), PNID)
    assert [s.status for s in decoded.events.statuses] == ["sent", "delivered"]


def test_what_twilio_cannot_carry_is_ignored_not_refused() -> None:
    body = envelope(
        {
            "contacts": [{"user_id": "US.1"}],
            "messages": [
                {
                    "from": "16505551234",
                    "id": "wamid.R",
                    "timestamp": "1",
                    "type": "reaction",
                    "reaction": {"emoji": "x"},
                },
                {"from": "16505551234", "id": "wamid.U", "timestamp": "1", "type": "unsupported"},
                {
                    "from": "US.13491208655302741918",
                    "id": "wamid.B",
                    "timestamp": "1",
                    "type": "text",
                    "text": {"body": "x"},
                },
            ],
            "statuses": [status("played")],
        }
    )
    decoded = decode(body, PNID)
    assert decoded.events.inbound == [] and decoded.events.statuses == [] and decoded.events.ignored == 4


def test_other_fields_and_other_numbers_change_nothing() -> None:
    assert (
        decode(envelope({"event": "APPROVED"}, field="message_template_status_update"), PNID).events.ignored
        == 1
    )
    decoded = decode(envelope({"statuses": [status("sent")]}, pnid="999"), PNID)
    assert decoded.events.statuses == [] and decoded.foreign == 1


def test_system_errors_are_reported() -> None:
    errors = [
        {"code": 131000, "title": "Something went wrong", "message": "m", "error_data": {"details": "d"}}
    ]
    [error] = decode(envelope({"errors": errors}), PNID).events.errors
    assert (error.code, error.title) == (131000, "Something went wrong")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"object": "page", "entry": []}).encode(),
        json.dumps({"object": "whatsapp_business_account"}).encode(),
        envelope({"statuses": [status("bogus")]}),
        envelope({"statuses": [{"status": "sent"}]}),
        envelope({"statuses": [status("sent", timestamp="yesterday")]}),
        envelope({"messages": [{"from": "16505551234", "id": "wamid.T", "timestamp": "1", "type": "text"}]}),
        envelope(
            {
                "messages": [
                    {"from": "16505551234", "id": "", "timestamp": "1", "type": "text", "text": {"body": "x"}}
                ]
            }
        ),
        json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "W", "changes": [{"field": "messages", "value": {}}]}],
            }
        ).encode(),
    ],
)
def test_malformed_deliveries_are_refused_whole(body: bytes) -> None:
    with pytest.raises(WebhookError):
        decode(body, PNID)


def test_recipients_are_read_as_digits() -> None:
    decoded = decode(
        envelope({"statuses": [status("sent"), status("delivered", recipient_id="+1 (650) 555-1234")]}), PNID
    )
    assert [s.recipient for s in decoded.events.statuses] == ["16505551234", "16505551234"]
    assert digits_of("16505551234") == "16505551234"
    assert digits_of("\u0661\u0662\u06634") == "4"  # non-ASCII digits are not a phone number's


def test_an_unknown_status_deep_in_a_batch_is_named_by_its_position() -> None:
    body = envelope({"statuses": [status("sent"), status("delivered"), status("bogus")]})
    with pytest.raises(WebhookError, match=r"^entry\[0\]\.changes\[0\]\.value\.statuses\[2\]\.status: "):
        decode(body, PNID)
