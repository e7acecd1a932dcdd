"""No secret reaches a log line through a URL: credentials, queries and webhook path secrets are redacted."""

from __future__ import annotations

import io
import json
import logging

import httpx
import structlog
import trio
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dispatcher.core import logs
from dispatcher.core.store import Store
from dispatcher.simulator import Simulator
from tests.helpers.callback_sender import Harness, entry
from tests.helpers.simulator_core import NUMBER, Recorder, number, request

SCRUB = [logs.redact_urls]


def test_credentials_query_and_fragment_are_replaced_host_and_path_kept() -> None:
    cases = {
        "https://user:pa55@cb.example.com:8443/status?token=abc#frag": "https://***@cb.example.com:8443/status?***",
        "https://u:p@ss@host.example/x": "https://***@host.example/x",  # '@' in the password too
        "http://cb.example/path": "http://cb.example/path",
        "error for url 'https://bob:hunter2@x.example/cb?sig=1'": "error for url 'https://***@x.example/cb?***",
        "http://127.0.0.1:9000/webhooks/onprem/15550000001/hook-1-secret-0123": (
            "http://127.0.0.1:9000/webhooks/onprem/15550000001/***"
        ),
        "/webhooks/onprem/15550000001/hook-1-secret-0123": "/webhooks/onprem/15550000001/***",
        "nothing to see": "nothing to see",
    }
    for raw, expected in cases.items():
        assert logs.redact(raw) == expected


SAFE = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%", min_size=6
)


@given(
    user=SAFE,
    password=SAFE,
    query=SAFE,
    words=st.lists(st.sampled_from(["see", "at", "(", ")", ","]), max_size=3),
)
def test_no_password_or_query_survives_whatever_the_characters(
    user: str, password: str, query: str, words: list[str]
) -> None:
    url = f"https://{user}:{password}@cb.example.com/status?token={query}"
    text = " ".join([*words, url, *words])
    cleaned = logs.redact(text)
    assert f"{user}:{password}" not in cleaned and f"token={query}" not in cleaned
    assert "cb.example.com/status" in cleaned


def test_the_configured_pipeline_redacts_values_lists_and_tracebacks() -> None:
    logs.configure("info", cache=False)
    out = io.BytesIO()
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(out))
    log = structlog.get_logger()
    try:
        raise RuntimeError("POST https://u:secret-pass@cb.example/x?k=secret-query failed")
    except RuntimeError as exc:
        log.error(
            "x.failed",
            url="https://u:secret-pass@cb.example/x",
            urls=["https://a.example/?secret-query"],
            exc_info=exc,
        )
    line = out.getvalue().decode()
    event = json.loads(line)
    assert "secret-pass" not in line and "secret-query" not in line
    assert event["url"] == "https://***@cb.example/x" and event["urls"] == ["https://a.example/?***"]
    assert "https://***@cb.example/x?***" in event["exception"]


def test_stdlib_lines_are_redacted_too() -> None:
    logs.configure("info", cache=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("HTTP Request: %s %s", "POST", "https://u:secret-pass@cb.example/x?q=secret-query")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "HTTP Request: POST https://***@cb.example/x?***\n"
    assert any(
        isinstance(f, logs.RedactingFilter) for h in logging.getLogger().handlers for f in h.filters
    )  # configure() put it on the root handler


async def test_a_callback_url_with_credentials_is_logged_redacted(
    writer: Store, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def refuse(_: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    logs.configure("info", cache=False)  # callback.failed is an info line
    h = Harness(writer, refuse)
    await nursery.start(h.sender.run)
    with capture_logs(processors=SCRUB) as events:
        await h.queue(entry("https://shop:cb-pass-8f2e@a.example/cb?sig=query-secret-77"))
        await trio.sleep(3)
    failed = [e for e in events if e["event"] == "callback.failed"]
    assert failed and all(e["url"] == "https://***@a.example/cb?***" for e in failed)
    assert not any("cb-pass-8f2e" in repr(e) or "query-secret-77" in repr(e) for e in events)
    assert h.requests  # it was really sent, with its credentials: only the log is redacted
    assert h.requests[0][1].headers["authorization"].startswith("Basic ")


async def test_the_simulator_never_logs_a_webhook_path_secret(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    secret = "sandbox-webhook-secret-1"
    hook = Recorder(status=500)
    sim = Simulator(
        [number(webhook_url=f"http://127.0.0.1:9/webhooks/onprem/15550000001/{secret}")],
        poster=hook,
        webhook_retries=1,
        webhook_retry_delay=0.1,
        status_delays=None,
    )
    await nursery.start(sim.run)
    with capture_logs(processors=SCRUB) as events:
        resp = await sim.handle(
            request("POST", "/_sim/inbound", {"number": NUMBER, "from": "15551230001", "body": "hi"})
        )
        assert resp.status == 201
        await trio.sleep(5)
    assert hook.posts, "the simulator posted webhooks"
    failed = [e for e in events if e["event"] == "sim.webhook_failed"]
    assert failed and all(e["url"].endswith("/webhooks/onprem/15550000001/***") for e in failed)
    assert not any(secret in repr(e) for e in events)
