"""Form and JSON request decoding: same parameters, same errors; malformed input is always a Twilio error."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.supervisor import Supervisor
from dispatcher.core import ledger
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import record_encoder
from dispatcher.core.params import MAX_FIELDS, parse_body, parse_form, parse_json
from dispatcher.core.store import Store
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor import batch
from dispatcher.frontdoor.intake import send_request
from dispatcher.messages.rules import CreateRules
from tests.helpers.intake import build_intake

ACCOUNT = "AC" + "0" * 32
FROM = "+15550000001"


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory):
    store = Store(Path(tmp_path_factory.mktemp("params")) / "db", map_size=8 << 20)
    yield build_intake(
        store,
        supervisor=Supervisor([]),
        accounts={ACCOUNT: "token"},
        numbers={FROM: NumberInfo(number=FROM, account_sid=ACCOUNT, webhook_secret="s")},
        wall=SystemWallClock(),
    ).rules
    store.close_env()


def test_form_keeps_repeats_order_and_blank_values() -> None:
    params = parse_form(b"To=whatsapp%3A%2B1555&MediaUrl=a&MediaUrl=b&Body=&Body=x+y")
    assert params == {"To": ["whatsapp:+1555"], "MediaUrl": ["a", "b"], "Body": ["", "x y"]}


def test_json_values_become_the_form_strings() -> None:
    params = parse_json(
        b'{"To":"whatsapp:+1555","MediaUrl":["a","b"],"ValidityPeriod":60,"SmartEncoded":true,'
        b'"ContentVariables":{"1":"Ada"},"StatusCallback":null}'
    )
    assert params == {
        "To": ["whatsapp:+1555"],
        "MediaUrl": ["a", "b"],
        "ValidityPeriod": ["60"],
        "SmartEncoded": ["true"],
        "ContentVariables": ['{"1":"Ada"}'],
    }


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/x-www-form-urlencoded", b"To=%ff", 400),  # not UTF-8
        ("application/x-www-form-urlencoded", b"\xff\xfe", 400),
        ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * (MAX_FIELDS + 1)), 400),
        ("application/json", b"[1, 2]", 400),
        ("application/json", b'{"To": [["nested"]]}', 400),
        ("application/json", b"{", 400),
        ("application/json", b"", 400),
        ("application/json; charset=utf-8", b'"just a string"', 400),
        ("text/plain", b"To=x", 415),
        ("multipart/form-data; boundary=x", b"--x--", 415),
    ],
)
def test_malformed_bodies_are_twilio_errors(content_type: str, body: bytes, status: int) -> None:
    with pytest.raises(TwilioError) as info:
        parse_body(content_type, body)
    assert info.value.status == status and info.value.code == 20001 and info.value.message


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"From": "whatsapp:" + FROM, "Body": "hi"}, 21604),
        ({"To": "whatsapp:555", "From": "whatsapp:" + FROM, "Body": "hi"}, 21211),
        ({"To": "whatsapp:+15551234567", "Body": "hi"}, 21603),
        ({"To": "whatsapp:+15551234567", "From": "whatsapp:12", "Body": "hi"}, 21212),
        ({"To": "whatsapp:+15551234567", "From": "whatsapp:+15557777777", "Body": "hi"}, 63007),
        ({"To": "whatsapp:+15551234567", "From": "whatsapp:" + FROM}, 21602),
        ({"To": "whatsapp:+15551234567", "From": "whatsapp:" + FROM, "Body": "x" * 1601}, 21617),
    ],
)
def test_form_and_json_bodies_get_the_same_errors(
    rules: CreateRules, params: dict[str, str], code: int
) -> None:
    form = urlencode(params).encode()
    as_json = json.dumps(params).encode()
    for content_type, body in [("application/x-www-form-urlencoded", form), ("application/json", as_json)]:
        with pytest.raises(TwilioError) as info:
            rules.validate(ACCOUNT, send_request(parse_body(content_type, body)))
        assert info.value.code == code, content_type


def test_form_and_json_bodies_make_the_same_request() -> None:
    params = {"To": "whatsapp:+15551234567", "From": "whatsapp:" + FROM, "Body": "héllo 👍 & = +"}
    form = parse_body(None, urlencode(params).encode())
    as_json = parse_body("application/json", json.dumps(params).encode())
    assert send_request(form) == send_request(as_json)


_text = st.text(max_size=40)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    _text,
    st.lists(_text, max_size=3),
    st.dictionaries(_text, _text, max_size=2),
    st.lists(st.lists(st.integers(), max_size=2), max_size=2),
)
_names = st.sampled_from(["To", "From", "Body", "StatusCallback", "MediaUrl", "x"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=300), st.sampled_from([None, "application/json", "application/x-www-form-urlencoded"])
)
def test_any_bytes_decode_or_fail_as_a_twilio_error(
    rules: CreateRules, body: bytes, ctype: str | None
) -> None:
    try:
        rules.validate(ACCOUNT, send_request(parse_body(ctype, body)))
    except TwilioError as exc:
        assert 400 <= exc.status < 500 and exc.code > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_names, _values, max_size=6))
def test_any_json_object_validates_or_fails_as_a_twilio_error(
    rules: CreateRules, obj: dict[str, object]
) -> None:
    body = json.dumps(obj).encode()
    try:
        record = rules.validate(ACCOUNT, send_request(parse_body("application/json", body)))
    except TwilioError as exc:
        assert 400 <= exc.status < 500
    else:
        assert record.from_number == FROM and record.body
        assert ledger.load(record_encoder.encode(record)) == record  # storable as it is


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_names, _text), max_size=8))
def test_any_form_validates_or_fails_as_a_twilio_error(
    rules: CreateRules, pairs: list[tuple[str, str]]
) -> None:
    try:
        rules.validate(ACCOUNT, send_request(parse_body(None, urlencode(pairs).encode())))
    except TwilioError as exc:
        assert 400 <= exc.status < 500


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps(v).encode(), st.lists(
    st.dictionaries(st.sampled_from(["to", "from", "body", "status_callback", "x"]), _values, max_size=4),
    max_size=3,
))))  # fmt: skip
def test_any_batch_body_decodes_or_fails_as_a_twilio_error(body: bytes) -> None:
    try:
        items = batch.decode(body)
    except TwilioError as exc:
        assert exc.status in (400, 413) and exc.code == 20001
    else:
        assert all(isinstance(item, batch.BatchItem) for item in items)
        assert msgspec.json.decode(msgspec.json.encode(items), type=list[batch.BatchItem]) == items
