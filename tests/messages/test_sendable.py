"""Accepted means storable and sendable: what a create accepts fits LMDB and the channel takes it.

Unit rules first (each bound a create enforces, with its Twilio code), then a
property test: any create the gateway accepts is written for real to LMDB
(intake, the sends of every part, a status: the writes that build keys from
request values), and every part it plans is encoded by both real channel
encoders and passes the simulators' own request checks and WhatsApp's limits
(text 1..4096 characters and not blank, captions up to 1024, template values
without newlines, tabs or runs of 5 spaces, a rendered template up to 1024).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors.supervisor import Supervisor
from dispatcher.channels import cloud, onprem
from dispatcher.config import ServiceConfig
from dispatcher.core import ledger, media, parts, segments, template_file
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import MessageRecord
from dispatcher.core.ssrf import RefusedURLError, UrlGuard
from dispatcher.core.store import Store
from dispatcher.core.template_file import Template
from dispatcher.core.twilio import TwilioError
from dispatcher.messages import templates
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.simulator.cloud import CloudApi
from dispatcher.simulator.messages import parse_send
from tests.helpers.buckets import as_buckets
from tests.helpers.intake import Intake, build_intake

ACCOUNT: Final = "AC" + "0" * 31 + "1"
SENDER: Final = "+15550000001"
TO: Final = "whatsapp:+15551234567"
SERVICE: Final = "MG" + "0" * 31 + "1"
NOW: Final = 1_800_000_000.0
OTP: Final = "HX" + "0" * 31 + "1"
NOTICE: Final = "HX" + "0" * 31 + "2"
PLAIN: Final = "HX" + "0" * 31 + "3"
TEMPLATES: Final = [
    Template(sid=OTP, account=ACCOUNT, namespace="ns", name="otp", language="en", body="Code {{1}}"),
    # 1,000 characters of fixed text: a value over 24 characters renders past 1,024.
    Template(
        sid=NOTICE,
        account=ACCOUNT,
        namespace="ns",
        name="notice",
        language="en",
        body="Dear {{1}}, " + "n" * 993,
    ),
    Template(sid=PLAIN, account=ACCOUNT, namespace="ns", name="hello", language="en", body="Hello!"),
]
_UNSENDABLE_PARAM: Final = re.compile(r"[\r\n\t]| {5}")


class Fixed:
    def now(self) -> float:
        return NOW


def make_intake(store: Store) -> Intake:
    service = ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=[SENDER])
    return build_intake(
        store,
        supervisor=Supervisor([]),
        accounts={ACCOUNT: "token"},
        numbers={SENDER: NumberInfo(SENDER, ACCOUNT, "s", status_callback="https://numbers.example/cb")},
        wall=Fixed(),
        templates=TemplateRegistry(store, TEMPLATES),
        services=Services([service], as_buckets(store)),
        max_body_chars=9000,
    )


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    store = Store(Path(tmp_path_factory.mktemp("sendable")) / "db", map_size=8 << 20)
    yield make_intake(store)
    store.close_env()


def create(intake: Intake, **kw: Any) -> MessageRecord:
    fields: dict[str, Any] = {"to": TO, "from_": "whatsapp:" + SENDER, "body": None}
    fields.update(kw)
    return intake.rules.validate(ACCOUNT, SendRequest(**fields))


def refused(intake: Intake, **kw: Any) -> TwilioError:
    with pytest.raises(TwilioError) as info:
        create(intake, **kw)
    assert info.value.status == 400
    return info.value


# -- the bounds, one by one -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://" + "a" * 600 + ".example.com/cb",  # issue 12 item 1
        "https://" + "a" * 64 + ".example.com/cb",  # one label over 63
        "https://" + ".".join(["a" * 63] * 4) + ".com/cb",  # 256 in all
        "https://my_host.example.com/cb",  # Twilio: no underscores
        "https://-edge.example.com/cb",
        "https://a..b.example.com/cb",
        "https://" + "é" * 70 + ".example/cb",  # no IDNA form
        "https://\U0001f600.example/cb",  # not in IDNA 2008: trio's resolver could never look it up
        "https://example.com:0/cb",
        "ftp://example.com/cb",
        "https://example.com/" + "p" * 2100,
    ],
)
def test_a_status_callback_dns_cannot_carry_is_21609(intake: Intake, url: str) -> None:
    error = refused(intake, body="hi", status_callback=url)
    assert error.code == 21609 and error.message.startswith("Invalid StatusCallback")


@pytest.mark.parametrize(
    "url",
    [
        "https://" + ".".join(["a" * 63] * 3) + "." + "b" * 61 + "/cb",  # 253: the longest name
        "https://bücher.example/cb",
        "https://xn--bcher-kva.example/cb",
        "http://203.0.113.9:8080/cb",
        "http://[2001:db8::1]/cb",
        "https://user:secret@hooks.example.com./cb?x=1",
    ],
)
def test_a_status_callback_dns_can_carry_is_accepted(intake: Intake, url: str) -> None:
    assert create(intake, body="hi", status_callback=url).status_callback == url


def test_a_media_url_whose_host_dns_cannot_carry_is_21620(intake: Intake) -> None:
    error = refused(intake, media_urls=["https://" + "a" * 600 + ".example.com/a.jpg"])
    assert error.code == 21620


@pytest.mark.parametrize("body", [" ", "\n\t ", " " * 5000, "\u3000\u2003"])
def test_a_body_of_only_whitespace_is_21602(intake: Intake, body: str) -> None:
    assert refused(intake, body=body).code == 21602


def test_a_blank_body_beside_media_is_no_caption_and_no_text(intake: Intake) -> None:
    record = create(intake, body="   ", media_urls=["https://cdn.example.com/a.ogg"])
    assert record.body == "" and record.parts == 1
    assert json.loads(onprem.encode_send(record, 0)) == {
        "to": "15551234567",
        "type": "audio",
        "audio": {"link": "https://cdn.example.com/a.ogg"},
    }


@pytest.mark.parametrize("tail", ["   ", "\n", " \t \n "])
def test_4096_characters_and_trailing_whitespace_go_out_as_4096(intake: Intake, tail: str) -> None:
    """Issue 12 item 10: planned as one segment, it was sent whole (4,099 characters)."""
    record = create(intake, body="x" * 4096 + tail)
    assert record.parts == 1 and record.num_segments == 1
    for encode in (onprem.encode_send, cloud.encode_send):
        assert json.loads(encode(record, 0))["text"]["body"] == "x" * 4096


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ('{"1": "12\\n34"}', 21656),
        ('{"1": "12\\t34"}', 21656),
        ('{"1": "12\\r34"}', 21656),
        ('{"1": "12     34"}', 21656),  # 5 spaces
        ('{"1": "' + "v" * 1601 + '"}', 21658),
    ],
)
def test_a_template_value_whatsapp_refuses_is_refused_at_create(
    intake: Intake, variables: str, code: int
) -> None:
    assert refused(intake, content_sid=OTP, content_variables=variables).code == code


def test_four_spaces_in_a_value_are_fine(intake: Intake) -> None:
    record = create(intake, content_sid=OTP, content_variables='{"1": "12    34"}')
    assert record.template is not None and record.template.params == ["12    34"]


def test_a_rendered_template_over_1024_characters_is_21658(intake: Intake) -> None:
    fits = create(intake, content_sid=NOTICE, content_variables=json.dumps({"1": "a" * 24}))
    assert len(fits.body) == 1024
    error = refused(intake, content_sid=NOTICE, content_variables=json.dumps({"1": "a" * 25}))
    assert error.code == 21658 and "1025" in error.message


def test_a_body_is_matched_only_to_a_template_whatsapp_would_take(intake: Intake) -> None:
    assert create(intake, body="Code 1234").template is not None
    assert create(intake, body="Code 12     34").template is None  # 5 spaces: free-form text
    assert create(intake, body="Dear " + "a" * 24 + ", " + "n" * 993).template is not None
    long = create(intake, body="Dear " + "a" * 25 + ", " + "n" * 993)
    assert long.template is None and long.parts == 1  # 1,025 characters: text, not a template


# -- any accepted create: storable and sendable ------------------------------------------

_WS = " \t\n\u00a0"
_text = st.text(alphabet=st.sampled_from("ab ,.\t\n\u00a0é😀"), max_size=40)
_near = st.sampled_from([1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 8193])
_bodies = st.one_of(
    st.none(),
    _text,
    _text,
    st.builds(lambda n, tail: "x" * n + tail, _near, st.text(alphabet=_WS, max_size=4)),
    st.builds(
        lambda word, n: word * n, st.sampled_from(["word ", "w\n", "  ", "😀 ", "abc"]), st.integers(1, 2400)
    ),
    st.builds(lambda head, n, tail: head + " " * n + tail, _text, st.integers(4000, 5000), _text),
)
_labels = st.one_of(
    st.sampled_from(["example", "a-b", "xn--bcher-kva", "bücher", "my_host", "-x", "", "a" * 63, "a" * 64]),
    st.builds(lambda n: "a" * n, st.integers(1, 700)),
)
# Mostly names a create takes, so most examples go on to be stored and encoded; some it refuses.
_good_hosts = st.one_of(
    st.sampled_from(["hooks.example.com", "203.0.113.9", "[2001:db8::1]", "bücher.example", "x.example."]),
    st.builds(lambda n: "a" * n + ".example", st.integers(1, 63)),
    st.builds(lambda n: ".".join(["b" * 63] * n), st.integers(1, 3)),
)
_hosts = st.one_of(
    _good_hosts, _good_hosts, _good_hosts, st.builds(".".join, st.lists(_labels, min_size=1, max_size=6))
)
_any_callbacks = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["https", "http", "ftp"]),
    _hosts,
    st.sampled_from(["", ":8080", ":65535", ":0", ":99999"]),
    st.sampled_from(["cb", "cb?x=1", "p" * 2000, "p" * 2100]),
)
_good_callbacks = st.builds(lambda host: f"https://{host}/cb", _good_hosts)
_callbacks = st.one_of(st.none(), st.just(""), _good_callbacks, _good_callbacks, _any_callbacks)
_urls = st.builds(
    lambda host, path, ext: f"https://{host}/{path}{ext}",
    _hosts,
    st.sampled_from(["a", "dir/file%20name", "p" * 1900, "p" * 2100]),
    st.sampled_from([".jpg", ".png", ".mp4", ".3gp", ".ogg", ".mp3", ".webp", ".pdf", ""]),
)
_good_urls = st.builds(
    lambda host, ext: f"https://{host}/media/file{ext}",
    _good_hosts,
    st.sampled_from([".jpg", ".png", ".mp4", ".3gp", ".ogg", ".mp3", ".webp", ".pdf", ""]),
)
_media_urls = st.one_of(
    st.lists(st.one_of(_good_urls, _good_urls, _good_urls, _urls), min_size=1, max_size=3),
    st.lists(_good_urls, min_size=9, max_size=11),
)
_values = st.one_of(
    _text,
    _text,
    st.builds(lambda n: "v" * n, st.integers(1, 1700)),
    st.sampled_from(["", "  ", "a    b", "a     b"]),
)
_fine_values = st.builds(
    lambda head, rest: head + rest, st.sampled_from("aZ7é😀"), st.text(alphabet="ab 1,é😀", max_size=30)
)
_variables = st.one_of(
    st.builds(lambda value: json.dumps({"1": value}), _fine_values),
    st.builds(lambda value: json.dumps({"1": value}), _fine_values),
    st.just(None),
    st.just("not json"),
    st.builds(
        lambda values: json.dumps({str(i): v for i, v in enumerate(values, 1)}), st.lists(_values, max_size=2)
    ),
    st.builds(lambda value: json.dumps({"1": value}), _values),
    st.builds(lambda value: json.dumps({"1": value}), _values),
)


def _request(body: str | None, callback: str | None, service: bool, **content: Any) -> SendRequest:
    return SendRequest(
        to=TO,
        from_=None if service else "whatsapp:" + SENDER,
        messaging_service_sid=SERVICE if service else None,
        body=body,
        status_callback=callback,
        **content,
    )


# Text, media (the Body a caption or text after them) and templates, each its own shape.
_shapes: Final = {
    "text": st.builds(_request, _bodies, _callbacks, st.booleans()),
    "media": st.builds(_request, _bodies, _callbacks, st.booleans(), media_urls=_media_urls),
    "template": st.builds(
        _request,
        st.none(),
        _callbacks,
        st.booleans(),
        content_sid=st.sampled_from([OTP, NOTICE, PLAIN]),
        content_variables=_variables,
    ),
}
_requests = st.sampled_from(["text", "text", "media", "template", "template"]).flatmap(_shapes.__getitem__)


def _store_and_deliver(intake: Intake, record: MessageRecord) -> None:
    """The writes that turn request values into keys, on a fresh real LMDB: the intake, each
    part's send (its status callback is queued under its origin), a delivery status."""

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, map_size=8 << 20, commit_in_thread=False)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(store.run_writer)
                    seq = await store.write(intake.gateway.intake(record))
                    for part in range(record.parts):
                        await store.write(
                            ledger.mark_sent(SENDER, seq + part, record.sid, f"wamid.{part}", NOW)
                        )
                    await store.write(ledger.apply_status(SENDER, "wamid.0", "delivered", None, None, NOW))
                    nursery.cancel_scope.cancel()
            finally:
                store.close_env()

    trio.run(run)


def _check_whatsapp_limits(msg: dict[str, Any]) -> None:
    kind = msg["type"]
    if kind == "text":
        body = msg["text"]["body"]
        assert 1 <= len(body) <= segments.TEXT_LIMIT and not body.isspace()
    elif kind == "template":
        template = next(t for t in TEMPLATES if t.name == msg["template"]["name"])
        values = [p["text"] for c in msg["template"].get("components", []) for p in c["parameters"]]
        assert len(values) == template_file.placeholders(template.body)
        assert all(v.strip() and not _UNSENDABLE_PARAM.search(v) for v in values)
        assert len(templates.render(template.body, values)) <= template_file.MAX_TEMPLATE_BODY
    else:
        item = msg[kind]
        assert kind in media.KIND_BY_TYPE.values() or kind == "document"
        assert len(item["link"]) <= media.MAX_URL
        caption = item.get("caption")
        if caption is not None:
            assert kind in media.CAPTIONED
            assert 1 <= len(caption) <= parts.CAPTION_LIMIT and not caption.isspace()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_requests)
def test_an_accepted_create_is_storable_and_every_part_is_sendable(intake: Intake, req: SendRequest) -> None:
    try:
        record = intake.rules.validate(ACCOUNT, req)
    except TwilioError as exc:
        assert exc.status == 400 and exc.code and exc.message
        event(f"refused {exc.code}")
        return
    event(
        f"accepted: {record.parts} part(s), "
        + ("template" if record.template else "media" if record.media_urls else "text")
    )
    planned = parts.plan(record)
    assert len(planned) == record.parts >= 1
    _store_and_deliver(intake, record)
    for part in range(record.parts):
        on_prem_body = onprem.encode_send(record, part)
        parse_send(on_prem_body)  # the On-Prem simulator's own checks (raises ApiError)
        _check_whatsapp_limits(json.loads(on_prem_body))
        graph = json.loads(cloud.encode_send(record, part))
        assert CloudApi._check_payload(graph, graph["type"]) is None
        _check_whatsapp_limits(graph)
    if record.template is None and not record.media_urls:
        # Only whitespace is dropped at the cuts: every other character goes, in order.
        sent = "".join(json.loads(onprem.encode_send(record, i))["text"]["body"] for i in range(record.parts))
        assert "".join(sent.split()) == "".join(record.body.split())
        assert record.num_segments == record.parts
    msgspec.msgpack.encode(record)


async def test_a_host_the_resolver_cannot_encode_is_refused_for_good_not_raised() -> None:
    """The system resolver raises UnicodeError (no OSError) for a name it cannot encode: the
    callback sender and the media check must see a refusal, not an exception."""

    async def resolver(host: str, port: int) -> list[str]:
        raise UnicodeError(f"cannot encode {host}")

    with pytest.raises(RefusedURLError, match="cannot look up"):
        await UrlGuard(resolver=resolver).resolve("https://bücher.example/cb")
