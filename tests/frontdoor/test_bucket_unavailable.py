"""A write to a bucket this daemon does not own right now: 503 with Retry-After, nothing stored.

A daemon that lost etcd's quorum fences its buckets out (``service.cluster.OwnedBuckets.suspend``)
until a keepalive succeeds again; a daemon overtaken by a newer owner finds a higher epoch in the
bucket. Either way the write fails (``StaleEpochError``) and passes by itself: the client is told
to retry shortly, as the forwarder tells it for a bucket without an owner. Here the home bucket of a
single daemon is fenced out by hand, which is what ``suspend`` does.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
import trio

from dispatcher.core.store import StoreFullError
from dispatcher.core.twilio import OWNERSHIP_RETRY_AFTER
from dispatcher.service.cluster import NOT_OWNER
from tests.helpers.asgi import asgi_exchange
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path, running_daemon, sandbox_config

FROM = "whatsapp:+15550000001"
TO = "whatsapp:+15551234567"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASIC = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()


@pytest.fixture
async def daemon(tmp_path: Path):
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", rate=0.001, burst=1)) as pair:
            yield pair


def stored(running) -> int:
    return running.buckets.home.entries(b"messages")


async def test_creates_answer_503_with_retry_after_and_store_nothing(daemon) -> None:
    running, client = daemon
    store = running.buckets.home
    store.fence(NOT_OWNER)
    before = stored(running)
    # The fast lane (single creates and batches, as a socket delivers them)...
    single = await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "hi"})
    batch = await client.post("/v1/messages:batch", json=[{"to": TO, "from": FROM, "body": "hi"}])
    # ... and the quart route behind it, which answers the same.
    status, headers, body = await asgi_exchange(
        running.quart_app,
        messages_path(),
        {"Authorization": BASIC, **FORM},
        urlencode({"To": TO, "From": FROM, "Body": "hi"}).encode(),
    )
    for answer_status, answer_headers, answer_body in (
        (single.status_code, single.headers, single.content),
        (batch.status_code, batch.headers, batch.content),
        (status, headers, body),
    ):
        assert answer_status == 503
        assert answer_headers["retry-after"] == str(OWNERSHIP_RETRY_AFTER)
        error = json.loads(answer_body)
        assert error["code"] == 20503
        assert "changing owner" in error["message"] and "nothing was stored" in error["message"]
        assert "epoch" not in error["message"]  # the store's own words stay in the log
    assert stored(running) == before
    # Owned again: the same create goes through.
    store.fence(None)
    again = await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "hi"})
    assert again.status_code == 201
    assert "retry-after" not in again.headers
    assert stored(running) == before + 1


async def test_other_store_failures_carry_no_retry_after(daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full or failing disk does not pass by itself in a second: no Retry-After is promised."""
    running, client = daemon

    async def full(fn: object) -> None:
        raise StoreFullError("storage is full")

    monkeypatch.setattr(running.buckets.home, "write", full)
    answer = await client.post(messages_path(), data={"To": TO, "From": FROM, "Body": "hi"})
    assert answer.status_code == 503
    assert "retry-after" not in answer.headers
    assert json.loads(answer.content)["message"] == "Service unavailable: the message could not be stored."
