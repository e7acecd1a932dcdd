"""WhatsApp -> daemon webhook intake: source verification and hostile bodies (property tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import hypothesis.strategies as st
import msgspec
import pytest
import trio
from hypothesis import given, settings
from structlog.testing import capture_logs

from dispatcher.channels.inbound_message import BSUID
from dispatcher.channels.onprem_webhook import WebhookError, decode
from dispatcher.config import ConfigError
from dispatcher.core.store import DB_NAMES
from dispatcher.service.daemon import Running
from tests.helpers.daemon import running_daemon, sandbox_config
from tests.helpers.json_docs import json_values, paths

VALID_INBOUND: dict[str, Any] = {
    "contacts": [{"profile": {"name": "Jane"}, "wa_id": "15551234567"}],
    "messages": [
        {
            "from": "15551234567",
            "id": "ABGG1",
            "timestamp": "1700000000",
            "type": "text",
            "text": {"body": "hi"},
        }
    ],
}
VALID_STATUS: dict[str, Any] = {
    "statuses": [
        {"id": "gBGG1", "recipient_id": "15551234567", "status": "delivered", "timestamp": "1700000000"}
    ]
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real-shaped webhook with one node replaced by an arbitrary JSON value, or raw garbage."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    doc = json.loads(json.dumps(draw(st.sampled_from([VALID_INBOUND, VALID_STATUS]))))
    path = draw(st.sampled_from(paths(doc)[1:]))
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = draw(json_values)
    return json.dumps(doc).encode()


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_decoder_accepts_or_rejects_cleanly(body: bytes) -> None:
    """Any body either decodes into well-formed events or raises WebhookError: nothing else escapes."""
    try:
        events = decode(body)
    except WebhookError:
        assert not body.lstrip().startswith(b"{") or not _is_json(body)  # only a non-object is refused
        return
    for event in events.inbound:
        phone = event.sender.startswith("+") and event.sender[1:].isdigit()
        assert (phone or BSUID.match(event.sender)) and event.channel_id
    for status in events.statuses:
        assert status.status in ("sent", "delivered", "read", "failed", "undelivered") and status.channel_id


def _is_json(body: bytes) -> bool:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return True


# Not a JSON object: refused (400), nothing changes; the platform retries it.
UNPARSEABLE: list[bytes] = [b"", b"\xff\xfe\x00garbage", b"[" * 10_000, b"[]", b'"statuses"']
# Authentic and JSON objects, with items that cannot be applied as they came: 200, the rest applied,
# each odd item reported by reason.
ODD: list[tuple[bytes, str]] = [
    (b'{"statuses": "sent"}', "bad_field"),
    (b'{"statuses": [{"id": "", "status": "read"}]}', "bad_status"),
    (b'{"statuses": [{"id": "x", "status": "read", "timestamp": "-1"}]}', "bad_field"),
    (
        b'{"messages": [{"from": "1", "id": "x1", "type": "text", "text": {"body": "b"}}]}',
        "unstorable_message",
    ),
    (b'{"messages": [{"from": "15551234567", "id": "x2", "type": "text"}]}', "bad_message"),
    (
        b'{"messages": [{"from": "15551234567", "id": "x3", "type": "image",'
        b' "image": {"id": "m", "mime_type": "image/\xc3\xa9"}}]}',
        "bad_message",
    ),
    (
        b'{"messages": [{"from": "15551234567", "id": "x4", "type": "interactive",'
        b' "interactive": {"type": "nfm_reply"}}]}',
        "unknown_type",
    ),
    # One good message and one bad one: the good one is applied, the bad one reported.
    (
        json.dumps(
            {
                "messages": [
                    VALID_INBOUND["messages"][0],
                    {"from": "x", "id": "y", "type": "text", "text": {"body": "b"}},
                ]
            }
        ).encode(),
        "unstorable_message",
    ),
    (
        json.dumps({"statuses": [*VALID_STATUS["statuses"], {"id": "z", "status": "exploded"}]}).encode(),
        "unknown_status",
    ),
]


def snapshot(daemon: Running) -> dict[bytes, list[tuple[bytes, bytes]]]:
    return {name: list(daemon.store.scan(name, b"")) for name in DB_NAMES if name != b"tokens"}


async def test_unparseable_bodies_get_400_and_change_nothing(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "d")) as (daemon, client):
            before = snapshot(daemon)
            url = "/webhooks/onprem/15550000001/hook-1-secret-0123"
            with capture_logs() as logs:
                for body in UNPARSEABLE:
                    resp = await client.post(url, content=body)
                    assert resp.status_code == 400, (body[:80], resp.text)
                    assert resp.json()["error"] == "malformed webhook"
                resp = await client.post(url, content=b"x" * (2 << 20))
                assert resp.status_code == 413
            assert snapshot(daemon) == before
            assert sum(e["event"] == "webhook.malformed" for e in logs) == len(UNPARSEABLE)


async def test_authentic_odd_bodies_get_200_apply_the_rest_and_report_each_item(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "d")) as (daemon, client):
            url = "/webhooks/onprem/15550000001/hook-1-secret-0123"
            with capture_logs() as logs:
                for body, _ in ODD:
                    resp = await client.post(url, content=body)
                    assert resp.status_code == 200, (body[:80], resp.text)
            reported = [e["reason"] for e in logs if e["event"] == "webhook.unapplied"]
            assert sorted(reported) == sorted(reason for _, reason in ODD)
            # What could be read was stored: the good message beside a bad one, and the odd ones
            # that have an id and a sender, as what could be read of them.
            stored = {bytes(k).decode() for k, _ in daemon.store.scan(b"wamid", b"")}
            assert {"ABGG1", "x2", "x3", "x4"} <= stored and "x1" not in stored
            metrics = (await client.get("/metrics")).text
            assert 'wadispatch_webhook_unapplied_total{reason="unstorable_message"} 2.0' in metrics


async def test_webhook_source_is_verified_by_path_secret_or_header(tmp_path: Path) -> None:
    # Number 1 proves itself with the path secret (default), numbers 2 and 3 with a header.
    cfg = sandbox_config(tmp_path / "d")
    header_cfg = sandbox_config(
        tmp_path / "d", number_extra='webhook_auth = "header"\nwebhook_header = "X-Hub-Key"'
    )
    numbers = [cfg.numbers[0], *header_cfg.numbers[1:]]
    cfg = msgspec.structs.replace(cfg, numbers=numbers)
    body = json.dumps(VALID_STATUS).encode()
    with trio.fail_after(30):
        async with running_daemon(cfg) as (daemon, _), httpx.AsyncClient(base_url=daemon.url) as anon:
            ok = await anon.post("/webhooks/onprem/15550000001/hook-1-secret-0123", content=body)
            assert ok.status_code == 200
            good_header = await anon.post(
                "/webhooks/onprem/15550000002", content=body, headers={"X-Hub-Key": "hook-2-secret-0123"}
            )
            assert good_header.status_code == 200
            with capture_logs() as logs:
                refused = [
                    await anon.post("/webhooks/onprem/15550000001/wrong", content=body),
                    await anon.post(
                        "/webhooks/onprem/15550000001",
                        content=body,
                        headers={"X-Hub-Key": "hook-1-secret-0123"},
                    ),
                    await anon.post(
                        "/webhooks/onprem/15550000002/hook-2-secret-0123", content=body
                    ),  # header number
                    await anon.post(
                        "/webhooks/onprem/15550000002",
                        content=body,
                        headers={"X-Hub-Key": "hook-3-secret-0123"},
                    ),
                    await anon.post("/webhooks/onprem/15550000002", content=body),
                    await anon.post("/webhooks/onprem/15559999999/hook-1-secret-0123", content=body),
                ]
            assert [r.status_code for r in refused] == [403] * len(refused)
            assert sum(e["event"] == "webhook.refused" for e in logs) == len(refused)
            assert all("hook-" not in json.dumps(e) for e in logs)  # secrets never logged


@pytest.mark.parametrize("field", ["status_callback", "inbound_url"])
def test_config_refuses_non_http_callback_urls(tmp_path: Path, field: str) -> None:
    with pytest.raises(ConfigError, match=f"numbers\\[0\\].{field}"):
        sandbox_config(tmp_path, number_extra=f'{field} = "ftp://x"')


def test_config_refuses_a_bad_allow_list_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"callbacks\.allow_private"):
        sandbox_config(tmp_path, extra='[callbacks]\nallow_private = ["not-an-ip"]')
