"""An app-level delivery split by the phone_number_id each change names (``decode_by_number``):
each number's events are exactly what its own URL's ``decode`` gives it, and nothing is lost."""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from dispatcher.channels.cloud_webhook import decode, decode_by_number

PNIDS = ("106540352242922", "106540352242923", "106540352242924")


def change(pnid: str, item: str, n: int) -> dict[str, Any]:
    """A ``messages`` change for ``pnid``: a status, a customer's message, or an unknown status."""
    if item == "message":
        value: dict[str, Any] = {
            "contacts": [{"profile": {"name": "Ada"}, "wa_id": "16505551234"}],
            "messages": [
                {
                    "from": "16505551234",
                    "id": f"wamid.IN{n}",
                    "timestamp": "1",
                    "type": "text",
                    "text": {"body": "hi"},
                }
            ],
        }
    else:
        state = "delivered" if item == "status" else "teleported"
        value = {
            "statuses": [{"id": f"wamid.OUT{n}", "status": state, "timestamp": "1", "recipient_id": "1650"}]
        }
    value["metadata"] = {"display_phone_number": "15550783881", "phone_number_id": pnid}
    return {"field": "messages", "value": {"messaging_product": "whatsapp", **value}}


def body(entries: list[list[dict[str, Any]]]) -> bytes:
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": c} for c in entries]}
    return json.dumps(doc).encode()


items = st.tuples(st.sampled_from(PNIDS), st.sampled_from(["status", "message", "unknown"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(items, max_size=4), max_size=4))
def test_each_number_gets_what_its_own_url_would(entries: list[list[tuple[str, str]]]) -> None:
    n = iter(range(10_000))
    raw = body([[change(pnid, item, next(n)) for pnid, item in e] for e in entries])
    split = decode_by_number(raw)
    named = {pnid for e in entries for pnid, _ in e}
    assert set(split.numbers) == named
    for pnid in named:
        alone = decode(raw, pnid)
        mine = split.numbers[pnid]
        assert mine.events.statuses == alone.events.statuses
        assert mine.events.inbound == alone.events.inbound
        assert (mine.status_keys, mine.inbound_keys) == (alone.status_keys, alone.inbound_keys)
        others = [u for u in alone.events.unapplied if u.reason == "other_number"]
        assert [u for u in alone.events.unapplied if u.reason != "other_number"] == mine.events.unapplied
        assert len(others) == sum(1 for e in entries for p, _ in e if p != pnid)
        assert split.where[pnid].startswith("entry[")
    assert split.unapplied == [] and split.fields == []


def test_what_names_no_number_is_noted_and_fields_kept_by_waba() -> None:
    doc = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "W1",
                "time": 5,
                "changes": [
                    change(PNIDS[0], "status", 1),
                    {"field": "account_update", "value": {"event": "X"}},
                ],
            },
            {"id": "W2", "changes": [{"field": "messages", "value": {"statuses": []}}]},  # no metadata
            "not an entry",
        ],
    }
    split = decode_by_number(json.dumps(doc).encode())
    assert list(split.numbers) == [PNIDS[0]]
    assert [(f.field, f.waba_id, f.time, f.where) for f in split.fields] == [
        ("account_update", "W1", 5.0, "entry[0].changes[1]")
    ]
    assert [u.reason for u in split.unapplied] == ["bad_value", "bad_entry"]
