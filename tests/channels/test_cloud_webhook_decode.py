"""Cloud webhook envelopes (reference section 2.6) -> channel-neutral events, with dedup keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import assume, given, settings

from dispatcher.channels.cloud_webhook import decode, digits_of
from dispatcher.channels.inbound_message import BSUID, PHONE
from dispatcher.channels.onprem_webhook import WebhookError
from tests.helpers.json_docs import json_values, paths

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


def test_what_twilio_has_no_form_for_is_stored_as_it_could_be_read() -> None:
    body = envelope(
        {
            "contacts": [{"user_id": "US.13491208655302741918", "profile": {"name": "Ada"}}],
            "messages": [
                {
                    "from": "16505551234",
                    "id": "wamid.R",
                    "timestamp": "1",
                    "type": "reaction",
                    "reaction": {"message_id": "wamid.OUT1", "emoji": "x"},
                },
                {"from": "16505551234", "id": "wamid.U", "timestamp": "1", "type": "unsupported"},
                {
                    "from": "US.13491208655302741918",
                    "id": "wamid.B",
                    "timestamp": "1",
                    "type": "text",
                    "text": {"body": "hello"},
                },
            ],
            "statuses": [status("played")],
        }
    )
    events = decode(body, PNID).events
    assert [(m.channel_id, m.sender, m.kind, m.body) for m in events.inbound] == [
        ("wamid.R", "+16505551234", "reaction", "x"),
        ("wamid.U", "+16505551234", "unsupported", ""),
        ("wamid.B", "US.13491208655302741918", "text", "hello"),
    ]
    assert events.inbound[2].profile_name == "Ada"
    assert events.statuses == [] and events.ignored == 1
    assert [(u.reason, u.where) for u in events.unapplied] == [
        ("unknown_type", "entry[0].changes[0].value.messages[0]"),
        ("unknown_type", "entry[0].changes[0].value.messages[1]"),
    ]


def test_a_username_only_customer_is_known_by_the_contacts_user_id() -> None:
    message = {"id": "wamid.N", "timestamp": "1", "type": "text", "text": {"body": "hi"}}
    body = envelope(
        {"contacts": [{"user_id": "BR.1502576394655843", "profile": {"name": "Bia"}}], "messages": [message]}
    )
    [event] = decode(body, PNID).events.inbound
    assert (event.sender, event.profile_name) == ("BR.1502576394655843", "Bia")
    # No phone, no user id anywhere: reported, not stored (nothing to answer).
    events = decode(envelope({"messages": [message]}), PNID).events
    assert events.inbound == [] and [u.reason for u in events.unapplied] == ["unstorable_message"]


def test_a_voice_note_with_codec_parameters_and_a_flows_reply_are_read() -> None:
    voice = {
        "from": "16505551234",
        "id": "wamid.V",
        "timestamp": "1",
        "type": "audio",
        "audio": {"mime_type": "audio/ogg; codecs=opus", "sha256": "x", "id": "123", "voice": True},
    }
    flow = {
        "from": "16505551234",
        "id": "wamid.F",
        "timestamp": "1",
        "type": "interactive",
        "interactive": {
            "type": "nfm_reply",
            "nfm_reply": {"response_json": '{"flow_token":"t","rating":"4"}', "body": "Sent", "name": "flow"},
        },
    }
    events = decode(envelope({"messages": [voice, flow]}), PNID).events
    assert events.unapplied == []
    [note, reply] = events.inbound
    assert [(m.media_id, m.content_type) for m in note.media] == [("123", "audio/ogg; codecs=opus")]
    assert (reply.kind, reply.body, reply.button_text) == (
        "interactive",
        '{"flow_token":"t","rating":"4"}',
        "Sent",
    )


def test_other_fields_and_other_numbers_change_nothing() -> None:
    assert (
        decode(envelope({"event": "APPROVED"}, field="message_template_status_update"), PNID).events.ignored
        == 1
    )
    events = decode(envelope({"statuses": [status("sent")]}, pnid="999"), PNID).events
    assert events.statuses == [] and [u.reason for u in events.unapplied] == ["other_number"]


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
    ],
)
def test_only_what_is_not_a_cloud_envelope_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookError):
        decode(body, PNID)


@pytest.mark.parametrize(
    ("value", "reason", "statuses", "inbound"),
    [
        ({"statuses": [status("bogus"), status("sent")]}, "unknown_status", 1, 0),
        ({"statuses": [{"status": "sent"}, status("sent")]}, "bad_status", 1, 0),
        ({"statuses": [status("sent", errors=[{"code": "x"}])]}, "bad_status", 0, 0),
        (
            {"messages": [{"from": "16505551234", "id": "wamid.T", "timestamp": "1", "type": "text"}]},
            "bad_message",
            0,
            1,
        ),
        (
            {
                "messages": [
                    {"from": "16505551234", "id": "", "timestamp": "1", "type": "text", "text": {"body": "x"}}
                ]
            },
            "unstorable_message",
            0,
            0,
        ),
        (
            {
                "messages": [
                    {"from": "16505551234", "id": "wamid.L", "type": "location", "location": {"latitude": 91}}
                ]
            },
            "bad_message",
            0,
            1,
        ),
        ({"contacts": "nobody", "statuses": [status("sent")]}, "bad_value", 0, 0),
    ],
)
def test_what_cannot_be_applied_is_reported_and_the_rest_applies(
    value: dict[str, Any], reason: str, statuses: int, inbound: int
) -> None:
    events = decode(envelope(value), PNID).events
    assert [u.reason for u in events.unapplied] == [reason]
    assert (len(events.statuses), len(events.inbound)) == (statuses, inbound)


def test_a_change_without_metadata_is_reported_and_the_next_entry_applies() -> None:
    good = json.loads(envelope({"statuses": [status("sent")]}))["entry"][0]
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "W", "changes": [{"field": "messages", "value": {}}]}, "junk", good],
        }
    ).encode()
    events = decode(body, PNID).events
    assert [u.reason for u in events.unapplied] == ["bad_value", "bad_entry"]
    assert [s.status for s in events.statuses] == ["sent"]


def test_recipients_are_read_as_digits() -> None:
    decoded = decode(
        envelope({"statuses": [status("sent"), status("delivered", recipient_id="+1 (650) 555-1234")]}), PNID
    )
    assert [s.recipient for s in decoded.events.statuses] == ["16505551234", "16505551234"]
    assert digits_of("16505551234") == "16505551234"
    assert digits_of("\u0661\u0662\u06634") == "4"  # non-ASCII digits are not a phone number's


def test_an_unknown_status_deep_in_a_batch_is_named_by_its_position() -> None:
    body = envelope({"statuses": [status("sent"), status("delivered"), status("bogus")]})
    events = decode(body, PNID).events
    assert [s.status for s in events.statuses] == ["sent", "delivered"]
    [unapplied] = events.unapplied
    assert unapplied.where == "entry[0].changes[0].value.statuses[2].status"


CORPUS = sorted((Path(__file__).resolve().parents[1] / "corpus" / "cloud").glob("*.json"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_mutated_real_payload_is_applied_item_by_item_or_refused_as_not_an_envelope(
    data: st.DataObject,
) -> None:
    """Any node of a real payload replaced by any JSON value: only a broken envelope is refused."""
    doc = json.loads(data.draw(st.sampled_from(CORPUS)).read_text())
    doc.pop("_source")
    path = data.draw(st.sampled_from(paths(doc)[1:]))
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = data.draw(json_values)
    try:
        body = json.dumps(doc, allow_nan=False).encode()
    except ValueError:
        assume(False)  # infinity is not JSON: such a body is not a webhook at all
    try:
        events = decode(body, PNID).events
    except WebhookError:
        assert path in (("object",), ("entry",)), path
        return
    for event in events.inbound:
        assert (PHONE.match(event.sender) or BSUID.match(event.sender)) and event.channel_id
    for status in events.statuses:
        assert status.status in ("sent", "delivered", "read", "failed") and status.channel_id
