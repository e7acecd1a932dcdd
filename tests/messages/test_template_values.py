"""ContentVariables -> a synced template's send, judged as Meta judges parameters (hypothesis)."""

from __future__ import annotations

import json
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.twilio import TwilioError
from dispatcher.core.wa_template import WaTemplate, slots
from dispatcher.messages.template_values import MAX_VARIABLE, resolve
from tests.helpers.templates import WABA, corpus, sid_of

UNSENDABLE = re.compile(r"[\r\n\t]| {5}")


def synced(name: str) -> WaTemplate:
    doc = corpus(name)
    return msgspec.convert(
        {
            "sid": sid_of(doc),
            "waba": WABA,
            "id": "1",
            "status": "APPROVED",
            "name": doc["name"],
            "language": doc["language"],
            "category": doc["category"],
            "parameter_format": doc.get("parameter_format", "POSITIONAL"),
            "components": doc["components"],
        },
        WaTemplate,
    )


NAMED = synced("meta_docs_order_shipped_named")
GOOD = {"header": "https://cdn.example.com/a.jpg", "first_name": "Ana", "order_id": "1", "button.1": "x"}


def test_every_kind_of_slot_and_its_key() -> None:
    assert [(s.key, s.component, s.kind, s.name) for s in slots(NAMED)] == [
        ("header", "header", "image", ""),
        ("first_name", "body", "text", "first_name"),
        ("order_id", "body", "text", "order_id"),
        ("button.0", "button", "payload", ""),
        ("button.1", "button", "url", ""),
    ]
    auth = synced("pywa_authentication_code_copy_code_button")
    assert [(s.key, s.component, s.kind) for s in slots(auth)] == [
        ("1", "body", "otp"),
        ("1", "button", "otp"),
    ]
    send, body = resolve(auth, json.dumps({"1": "123456"}))
    assert [c.type for c in send.components] == ["body", "button"] and "123456" in body


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_a_body_value_is_sent_as_given_or_refused_as_meta_would(value: str) -> None:
    variables = json.dumps({**GOOD, "first_name": value})
    if not value.strip() or UNSENDABLE.search(value):
        with pytest.raises(TwilioError) as caught:
            resolve(NAMED, variables)
        assert caught.value.code == 21656
        return
    send, body = resolve(NAMED, variables)
    [component] = [c for c in send.components if c.type == "body"]
    assert component.params[0].value == value and component.params[0].name == "first_name"
    assert body == f"Hi {value}, your order 1 has shipped."


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=3000))
def test_long_values_are_refused_with_21658(length: int) -> None:
    variables = json.dumps({**GOOD, "order_id": "9" * length})
    if length > MAX_VARIABLE or len(f"Hi Ana, your order {'9' * length} has shipped.") > 1024:
        with pytest.raises(TwilioError) as caught:
            resolve(NAMED, variables)
        assert caught.value.code == 21658
    else:
        assert resolve(NAMED, variables)[1].count("9") == length


def test_numbers_are_taken_as_their_text_and_bad_json_is_21656() -> None:
    send, _ = resolve(NAMED, json.dumps({**GOOD, "order_id": 8601}))
    assert [p.value for c in send.components if c.type == "body" for p in c.params] == ["Ana", "8601"]
    for raw in ("[1]", "{", '{"first_name": null}'):
        with pytest.raises(TwilioError) as caught:
            resolve(NAMED, raw)
        assert caught.value.code == 21656
