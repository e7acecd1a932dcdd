"""Property: whatever a client or a webhook sender posts, the daemon answers JSON, never a 5xx, stores
nothing when it refuses (a 4xx), and keeps serving.

hypothesis generates Twilio creates (form and JSON), batches, On-Prem webhooks (path and header
secret), signed Cloud webhooks and admin templates, from plausible (right names, right shapes, real
numbers) to hostile (wrong types, huge numbers, NaN, deep nesting, strings that are not UTF-8,
truncation, random bytes), and posts them over HTTP to one daemon. The daemon runs in its own thread
(its own trio run), so hypothesis drives plain synchronous tests; its numbers are paused, so the store
changes only by what the requests themselves write.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dispatcher.service.daemon import Running
from tests.helpers.daemon import ACCOUNT, CLOUD, NUMBERS, PNID, running_daemon
from tests.helpers.frontdoor_routes import (
    BATCH,
    CLOUD_HOOK,
    CREATE_FORM,
    CREATE_JSON,
    ONPREM_HEADER,
    ONPREM_PATH,
    TEMPLATES,
    UPDATE,
    Route,
    hostile_config,
    snapshot,
)


@dataclass(frozen=True)
class Served:
    running: Running
    token: trio.lowlevel.TrioToken
    client: httpx.Client

    def snapshot(self) -> dict[bytes, int]:
        """Keys per DB a request would add to, read on the daemon's own thread (its LMDB lives there).

        Leaves out what the daemon's own timers move while the property runs: an earlier example's
        message with a short ValidityPeriod expires (outbox, outbox_to, expiry shrink; its status
        callback is queued). A stored request would still show: every create adds a message record.
        """
        counts = trio.from_thread.run_sync(snapshot, self.running.store, trio_token=self.token)
        return {name: n for name, n in counts.items() if name not in MOVED_BY_TIMERS}


MOVED_BY_TIMERS = frozenset({b"outbox", b"outbox_to", b"expiry", b"callbacks"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    started: queue.Queue[tuple[Running, trio.lowlevel.TrioToken, trio.Event] | BaseException] = queue.Queue()
    data = tmp_path_factory.mktemp("fuzz") / "data"

    async def main() -> None:
        try:
            async with running_daemon(hostile_config(data)) as (running, _):
                for number in (*NUMBERS, CLOUD):
                    running.ops.pause(number)
                stop = trio.Event()
                started.put((running, trio.lowlevel.current_trio_token(), stop))
                await stop.wait()
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(main,), name="fuzzed-daemon")
    thread.start()
    got = started.get(timeout=60)
    if isinstance(got, BaseException):
        thread.join(5)
        raise got
    running, token, stop = got
    try:
        with httpx.Client(base_url=running.url, timeout=10.0) as client:
            yield Served(running, token, client)
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(30)


# -- generated values -------------------------------------------------------------------------

DEEP = "\x00deep\x00"  # replaced after encoding by arrays nested 5,000 deep
NOT_UTF8 = "\x00not-utf8\x00"  # replaced after encoding by a string of bytes that are not UTF-8


def encode(value: Any) -> bytes:
    """JSON (NaN and Infinity included, as Python writes them) with the two markers substituted."""
    text = json.dumps(value).encode()
    text = text.replace(json.dumps(DEEP).encode(), b"[" * 5000 + b"]" * 5000)
    return text.replace(json.dumps(NOT_UTF8).encode(), b'"\xff\xfe\xed\xa0\x80"')


ADDRESSES = st.sampled_from(
    [
        "whatsapp:+15551234567",
        "whatsapp:+15550000001",
        "whatsapp:+15550000002",
        f"whatsapp:{CLOUD}",
        "+15551234567",
        "whatsapp:",
        "",
        "whatsapp:+1" + "5" * 40,
    ]
)
URLS = st.sampled_from(
    ["https://example.com/cb", "http://127.0.0.1/cb", "ftp://x", "https://" + "a" * 600 + ".example.com/"]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=30),
    st.just(DEEP),
    st.just(NOT_UTF8),
    ADDRESSES,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TEXT = st.one_of(st.text(max_size=40), st.just("x" * 1700), st.just(DEEP), st.just(NOT_UTF8))

TWILIO_FIELDS = [
    "To",
    "From",
    "Body",
    "StatusCallback",
    "MediaUrl",
    "ContentSid",
    "ContentVariables",
    "ValidityPeriod",
    "SendAt",
    "ScheduleType",
    "MessagingServiceSid",
    "Status",
]


def twilio_value(name: str) -> st.SearchStrategy[Any]:
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "To": ADDRESSES,
        "From": ADDRESSES,
        "Body": TEXT,
        "StatusCallback": URLS,
        "MediaUrl": URLS,
        "ContentVariables": st.dictionaries(st.text(max_size=3), SCALARS, max_size=3),
        "ValidityPeriod": st.integers(min_value=-5, max_value=10**20),
        "Status": st.sampled_from(["canceled", "sent", ""]),
    }
    return st.one_of(plausible.get(name, TEXT), VALUES)


SENDABLE = st.fixed_dictionaries(
    {
        "To": st.sampled_from(["whatsapp:+15551234567", "whatsapp:+447700900123"]),
        "From": st.sampled_from(["whatsapp:+15550000001", f"whatsapp:{CLOUD}"]),
        "Body": st.text(min_size=1, max_size=40),
    },
    # A period that passes while the module's daemon runs would fail its message at that time
    # (actors/expiry.py: on time, paused or not), changing the store between another request's
    # before and after: refused periods, and accepted ones that outlast the run.
    optional={
        "StatusCallback": URLS,
        "ValidityPeriod": st.one_of(st.integers(min_value=-5, max_value=0), st.integers(3600, 100_000)),
    },
)
TWILIO_PARAMS = st.one_of(
    SENDABLE,
    st.fixed_dictionaries({name: twilio_value(name) for name in ("To", "From", "Body")}),
    st.dictionaries(st.sampled_from(TWILIO_FIELDS) | st.text(max_size=8), VALUES, max_size=6),
)

BATCH_ITEM = st.one_of(
    st.fixed_dictionaries(
        {"to": ADDRESSES, "from": ADDRESSES, "body": TEXT},
        optional={
            "status_callback": URLS,
            "content_sid": st.text(max_size=40),
            "content_variables": VALUES,
            # As ValidityPeriod above: none that passes while the module's daemon runs.
            "validity_period": st.one_of(st.integers(-(10**30), 0), st.integers(3600, 10**30)),
            "send_at": st.text(max_size=30),
        },
    ),
    st.dictionaries(st.text(max_size=10), VALUES, max_size=4),
)

STATUS = st.fixed_dictionaries(
    {
        "id": st.text(max_size=20) | st.just("wamid.X"),
        "status": st.sampled_from(["sent", "delivered", "read", "failed", "deleted", "warning", "??"]),
        "timestamp": st.sampled_from(["1700000000", "", "1" * 20]) | st.text(max_size=12),
        "recipient_id": st.sampled_from(["15551234567", ""]) | st.text(max_size=15),
    },
    optional={"errors": st.lists(st.dictionaries(st.sampled_from(["code", "title"]), SCALARS), max_size=2)},
)
MESSAGE = st.fixed_dictionaries(
    {
        "from": st.sampled_from(["16505551234", "US.123", ""]),
        "id": st.text(max_size=20),
        "timestamp": st.sampled_from(["1700000000", "x"]),
        "type": st.sampled_from(["text", "image", "audio", "interactive", "reaction", "unsupported", "??"]),
    },
    optional={
        "text": st.fixed_dictionaries({"body": TEXT}),
        "image": st.dictionaries(st.sampled_from(["id", "mime_type", "sha256"]), SCALARS),
        "audio": st.fixed_dictionaries(
            {"id": st.text(max_size=8), "mime_type": st.just("audio/ogg; codecs=opus")}
        ),
        "interactive": st.dictionaries(st.sampled_from(["type", "nfm_reply", "button_reply"]), VALUES),
    },
)
EVENTS = st.fixed_dictionaries(
    {}, optional={"statuses": st.lists(STATUS, max_size=3), "messages": st.lists(MESSAGE, max_size=2)}
)


def cloud_envelope(value: dict[str, Any]) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": CLOUD[1:], "phone_number_id": PNID},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }


TEMPLATE = st.fixed_dictionaries(
    {
        "account": st.just(ACCOUNT) | st.text(max_size=34),
        "name": st.text(max_size=20),
        "language": st.sampled_from(["en", "en_US", ""]),
    },
    optional={"sid": st.text(max_size=40), "body": TEXT, "variables": VALUES},
)


def mutated(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """As generated, most often; or cut short, or random bytes instead."""
    return st.one_of(
        bodies,
        bodies,
        bodies,
        st.tuples(bodies, st.floats(0, 1)).map(lambda pair: pair[0][: int(len(pair[0]) * pair[1])]),
        st.binary(max_size=300),
    )


FORM_BODIES = (
    SENDABLE.map(lambda p: urlencode(p).encode())
    | st.lists(
        st.tuples(
            st.sampled_from(TWILIO_FIELDS) | st.text(max_size=6),
            st.one_of(ADDRESSES, URLS, st.text(max_size=40)),
        )
    ).map(lambda pairs: urlencode(pairs).encode())
    | st.binary(max_size=200)
)

ROUTE_BODIES: list[tuple[Route, st.SearchStrategy[bytes]]] = [
    (CREATE_FORM, FORM_BODIES),
    (CREATE_JSON, mutated(TWILIO_PARAMS.map(encode))),
    (UPDATE, mutated(TWILIO_PARAMS.map(encode))),
    (BATCH, mutated(st.lists(BATCH_ITEM, max_size=4).map(encode))),
    (ONPREM_PATH, mutated(EVENTS.map(encode))),
    (ONPREM_HEADER, mutated(EVENTS.map(encode))),
    (CLOUD_HOOK, mutated(EVENTS.map(lambda v: encode(cloud_envelope(v))))),
    (TEMPLATES, mutated(TEMPLATE.map(encode))),
]
REQUESTS = st.one_of([st.tuples(st.just(route), bodies) for route, bodies in ROUTE_BODIES])
CONTENT_TYPES = st.sampled_from(
    [None, None, None, "text/plain", "application/json", "application/x-www-form-urlencoded"]
)


def post(served: Served, route: Route, body: bytes, content_type: str | None) -> None:
    """One request and its property: JSON, no 5xx, nothing stored on a 4xx."""
    headers = route.headers_for(body)
    if content_type is not None and "Content-Type" in headers:
        headers["Content-Type"] = content_type
    before = served.snapshot()
    resp = served.client.post(route.path, content=body, headers=headers)
    assert resp.status_code < 500, (route.name, body[:200], resp.text)
    assert resp.headers["content-type"] == "application/json", (route.name, resp.headers)
    msgspec.json.decode(resp.content)
    event(f"{route.name}: {resp.status_code}")  # see --hypothesis-show-statistics
    if resp.status_code >= 400:
        assert served.snapshot() == before, (route.name, resp.status_code, body[:200])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(request=REQUESTS, content_type=CONTENT_TYPES)
def test_any_body_on_any_route_is_json_never_5xx_and_refused_means_not_stored(
    served: Served, request: tuple[Route, bytes], content_type: str | None
) -> None:
    route, body = request
    post(served, route, body, content_type)


CREDENTIALS = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), min_size=1, max_size=60),
    st.tuples(st.sampled_from(["Basic ", "basic ", "Bearer ", "Basic  "]), st.binary(max_size=80)).map(
        lambda pair: pair[0] + base64.b64encode(pair[1]).decode()
    ),
    st.tuples(st.sampled_from([ACCOUNT, "SK" + "0" * 32, "AC", ""]), st.text(max_size=40)).map(
        lambda pair: "Basic " + base64.b64encode(f"{pair[0]}:{pair[1]}".encode()).decode()
    ),
)
AUTHENTICATED = [
    ("POST", CREATE_FORM.path),
    ("POST", BATCH.path),
    ("GET", CREATE_FORM.path),
    ("GET", UPDATE.path),
    ("POST", UPDATE.path),
    ("DELETE", UPDATE.path),
    ("GET", "/admin/v1/status"),
    ("POST", TEMPLATES.path),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(credential=CREDENTIALS, target=st.sampled_from(AUTHENTICATED))
def test_any_credential_is_refused_in_json_and_stores_nothing(
    served: Served, credential: str, target: tuple[str, str]
) -> None:
    method, path = target
    before = served.snapshot()
    header = credential.strip().encode("latin-1")  # as sent: h11 refuses a value with outer whitespace
    resp = served.client.request(method, path, headers={"Authorization": header}, content=b"To=x")
    assert resp.status_code in (400, 401, 403), (method, path, credential, resp.text)
    assert resp.headers["content-type"] == "application/json"
    assert served.snapshot() == before


def test_the_daemon_still_serves_after_the_fuzzing(served: Served) -> None:
    """Runs after the property (file order): health, a create and its fetch still work."""
    assert served.client.get("/healthz").status_code in (200, 503)
    created = served.client.post(
        CREATE_FORM.path,
        data={"To": "whatsapp:+15551234567", "From": "whatsapp:+15550000001", "Body": "still here"},
        headers={"Authorization": CREATE_FORM.headers["Authorization"]},
    )
    assert created.status_code == 201, created.text
    sid = created.json()["sid"]
    fetched = served.client.get(
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json",
        headers={"Authorization": CREATE_FORM.headers["Authorization"]},
    )
    assert fetched.status_code == 200 and fetched.json()["body"] == "still here"
