"""/metrics: Prometheus text built at scrape time from the actors' and the store's plain counters."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dispatcher.core.histogram import Histogram
from dispatcher.core.store import Store, WriteTxn
from tests.helpers.daemon import ADMIN, ADMIN_TOKEN, messages_path, running_daemon, sandbox_config
from tests.helpers.metrics import parse, value


def test_histogram_is_cumulative_and_bounds_are_inclusive() -> None:
    h = Histogram([0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap.buckets == ((0.1, 2), (1.0, 4), (float("inf"), 5))
    assert snap.count == 5 and snap.total == pytest.approx(8.65)
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram([1.0, 0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram([])


async def test_metrics_after_sends_and_failures(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (_, client):
            ok = await client.post(
                messages_path(),
                data={"From": "whatsapp:+15550000001", "To": "whatsapp:+15551234567", "Body": "hi"},
            )
            bad = await client.post(  # the simulator's invalid-recipient range: fails with 63003
                messages_path(),
                data={"From": "whatsapp:+15550000001", "To": "whatsapp:+15559990001", "Body": "hi"},
            )
            assert ok.status_code == bad.status_code == 201
            await client.get(messages_path("SM" + "0" * 32))  # a 404, counted by route template
            with trio.fail_after(10):
                while True:
                    resp = await client.get("/metrics")
                    samples = parse(resp.text)
                    n = "+15550000001"
                    if (
                        value(samples, "wadispatch_messages_read_total", number=n) >= 1
                        and ("wadispatch_messages_failed_total", (("error_code", "63003"), ("number", n)))
                        in samples
                    ):
                        break
                    await trio.sleep(0.05)
            assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert value(samples, "wadispatch_messages_accepted_total", number=n) == 2
            # WhatsApp takes both; the bad recipient fails later, in a status webhook.
            assert value(samples, "wadispatch_messages_sent_total", number=n) == 2
            assert value(samples, "wadispatch_messages_delivered_total", number=n) == 1
            assert value(samples, "wadispatch_messages_failed_total", number=n, error_code="63003") == 1
            assert value(samples, "wadispatch_messages_accepted_total", number="+15550000002") == 0
            assert value(samples, "wadispatch_outbox_depth", number=n) == 0
            assert value(samples, "wadispatch_number_running", number=n) == 1
            assert value(samples, "wadispatch_token_refreshes_total", number=n) == 1
            assert value(samples, "wadispatch_rate_limit", number=n) == 20.0
            assert value(samples, "wadispatch_actor_restarts_total", number=n) == 0
            assert value(samples, "wadispatch_pair_rate_limited_total", number=n) == 0
            assert value(samples, "wadispatch_parked_recipients", number=n) == 0
            assert value(samples, "wadispatch_tier_recipients_used", number=n) == 0
            assert value(samples, "wadispatch_tier_budget_waits_total", number=n) == 0
            # On-Prem numbers have no messaging tier: no limit series at all.
            assert not [k for k in samples if k[0] == "wadispatch_tier_recipients_limit"]
            assert 6 * 86400 < value(samples, "wadispatch_token_expiry_seconds", number=n) <= 7 * 86400
            # Both sends got a full response from the simulator.
            assert value(samples, "wadispatch_send_latency_seconds_count", number=n) == 2
            assert value(samples, "wadispatch_send_latency_seconds_bucket", number=n, le="+Inf") == 2
            route = "/2010-04-01/Accounts/<account_sid>/Messages.json"
            assert (
                value(samples, "wadispatch_http_requests_total", method="POST", route=route, status="201")
                == 2
            )
            fetch = "/2010-04-01/Accounts/<account_sid>/Messages/<sid>.json"
            assert (
                value(samples, "wadispatch_http_requests_total", method="GET", route=fetch, status="404") == 1
            )
            assert value(samples, "wadispatch_store_commit_batch_size_count", bucket="0") >= 2
            assert value(samples, "wadispatch_store_commit_seconds_count", bucket="0") >= 2
            assert value(samples, "wadispatch_store_queued_writes", bucket="0") >= 0


async def test_metrics_can_require_the_admin_token(tmp_path: Path) -> None:
    extra = f'[admin]\ntoken = {{ value = "{ADMIN_TOKEN}" }}\nprotect_metrics = true\n'
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=extra)) as (_, client):
            assert (await client.get("/metrics", auth=None)).status_code == 401
            resp = await client.get("/metrics", headers=ADMIN, auth=None)
            assert resp.status_code == 200 and "wadispatch_outbox_depth" in resp.text


async def test_callback_queue_and_sender_figures(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (_, client):
            samples = parse((await client.get("/metrics")).text)
            assert value(samples, "wadispatch_callback_queue_depth") == 0
            resp = await client.post(
                messages_path(),
                data={
                    "From": "whatsapp:+15550000001",
                    "To": "whatsapp:+15551234567",
                    "Body": "hi",
                    # Loopback and not allow-listed: the SSRF guard refuses to call it.
                    "StatusCallback": "http://127.0.0.1:9/status",
                },
            )
            assert resp.status_code == 201, resp.text
            with trio.fail_after(15):
                while True:
                    samples = parse((await client.get("/metrics")).text)
                    if value(samples, "wadispatch_callbacks_refused_total") >= 1:
                        break
                    await trio.sleep(0.05)
            assert value(samples, "wadispatch_callbacks_delivered_total") == 0
            # A refused callback leaves the durable queue.
            with trio.fail_after(15):
                while True:
                    samples = parse((await client.get("/metrics")).text)
                    if value(samples, "wadispatch_callback_queue_depth") == 0:
                        break
                    await trio.sleep(0.05)


async def test_store_entries_counts_a_named_db(writer: Store) -> None:
    def put(txn: WriteTxn) -> None:
        for i in range(3):
            txn.put(b"callbacks", b"origin\0" + i.to_bytes(8, "big"), b"x")

    assert writer.entries(b"callbacks") == 0
    await writer.write(put)
    assert writer.entries(b"callbacks") == 3
    assert writer.entries(b"outbox") == 0
