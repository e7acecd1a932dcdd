"""A webhook only touches its own number's messages; statuses parked for unknown ids are bounded, expire."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from dispatcher.core import ledger, orphans
from dispatcher.core.events import StatusEvent, WebhookEvents
from dispatcher.core.store import Store
from tests.helpers.buckets import as_buckets
from tests.helpers.daemon import running_daemon, sandbox_config
from tests.webhooks.test_inbox import ACCOUNT, CUSTOMER, NUMBER, Info, make_inbox, outbound, queued

OTHER = "+15550000009"
OTHER_ACCOUNT = "AC00000000000000000000000000000009"


async def sent_by_other(store: Store, channel_id: str) -> str:
    record = outbound("SM" + "9" * 32)
    record.from_number, record.account_sid = OTHER, OTHER_ACCOUNT
    seq = await store.write(ledger.accept(record))
    await store.write(ledger.mark_sent(OTHER, seq, record.sid, channel_id, 1_700_000_001.0))
    return record.sid


async def test_a_status_for_another_numbers_message_changes_nothing(writer: Store) -> None:
    inbox = make_inbox(writer)
    sid = await sent_by_other(writer, "wamid.B1")
    callbacks_before = len(queued(writer))
    forged = StatusEvent(channel_id="wamid.B1", status="failed", error_code=63024, error_message="forged")
    applied = await inbox.apply(Info(), WebhookEvents(statuses=[forged]))  # authenticated for NUMBER
    assert applied.moved == [] and [u.reason for u in applied.refused] == ["other_number"]
    assert ledger.load(writer.get(b"messages", ledger.sid_key(sid)) or b"").status == "sent"
    assert len(queued(writer)) == callbacks_before  # no callback fired with the forged data
    assert inbox.unapplied == {"other_number": 1}
    # The owner's own webhook still applies it.
    owner = Info(number=OTHER, account_sid=OTHER_ACCOUNT)
    moved = (await inbox.apply(owner, WebhookEvents(statuses=[forged]))).moved
    assert [r.status for r in moved] == ["failed"]


async def test_a_status_for_an_inbound_message_id_changes_nothing(writer: Store) -> None:
    inbox = make_inbox(writer)
    from dispatcher.core.events import InboundEvent

    event = InboundEvent(channel_id="wamid.IN", sender=CUSTOMER, kind="text", timestamp=1.0, body="hi")
    await inbox.apply(Info(), WebhookEvents(inbound=[event]))
    applied = await inbox.apply(
        Info(), WebhookEvents(statuses=[StatusEvent(channel_id="wamid.IN", status="read")])
    )
    assert applied.moved == [] and [u.reason for u in applied.refused] == ["other_number"]


async def test_a_parked_status_only_applies_to_the_number_whose_webhook_carried_it(writer: Store) -> None:
    inbox = make_inbox(writer)
    # NUMBER's webhook parks a "failed" for an id nobody has yet; OTHER then sends with that id.
    forged = StatusEvent(channel_id="wamid.FUTURE", status="failed", error_code=63024, error_message="x")
    await inbox.apply(Info(), WebhookEvents(statuses=[forged]))
    sid = await sent_by_other(writer, "wamid.FUTURE")
    assert ledger.load(writer.get(b"messages", ledger.sid_key(sid)) or b"").status == "sent"
    # NUMBER's own message with a parked status picks it up.
    await inbox.apply(Info(), WebhookEvents(statuses=[StatusEvent(channel_id="wamid.MINE", status="read")]))
    mine = outbound()
    seq = await writer.write(ledger.accept(mine))
    await writer.write(ledger.mark_sent(NUMBER, seq, mine.sid, "wamid.MINE", 1_700_000_002.0))
    assert ledger.load(writer.get(b"messages", ledger.sid_key(mine.sid)) or b"").status == "read"


async def park(writer: Store, number: str, ids: list[str], at: float, limits: orphans.Limits) -> None:
    def fn(txn: object) -> None:
        for channel_id in ids:
            ledger.apply_status(number, channel_id, "delivered", None, None, at, limits)(txn)  # type: ignore[arg-type]

    await writer.write(fn)


async def test_parked_statuses_are_bounded_per_number_oldest_first(writer: Store) -> None:
    limits = orphans.Limits(limit=3, ttl=3600.0)
    await park(writer, NUMBER, [f"w{i}" for i in range(5)], 1000.0, limits)
    await park(writer, OTHER, ["x0", "x1"], 1000.0, limits)
    counts = await writer.write(lambda txn: (orphans.count(txn, NUMBER), orphans.count(txn, OTHER)))
    assert counts == (3, 2)
    left = await writer.write(
        lambda txn: [orphans.take(txn, NUMBER, f"w{i}", 1001.0) is not None for i in range(5)]
    )
    assert left == [False, False, True, True, True]
    assert await writer.write(lambda txn: orphans.count(txn, NUMBER)) == 0


async def test_parked_statuses_expire(autojump_clock: trio.testing.MockClock, writer: Store) -> None:
    from dispatcher.core.clock import TrioWallClock
    from dispatcher.webhooks.inbox import Inbox

    wall = TrioWallClock(start=1_700_000_000.0)
    inbox = Inbox(
        buckets=as_buckets(writer),
        wall=wall,
        public_url=lambda: "",
        orphan_limits=orphans.Limits(limit=100, ttl=60.0),
    )
    await inbox.apply(Info(), WebhookEvents(statuses=[StatusEvent(channel_id="wamid.LATE", status="read")]))
    await inbox.apply(Info(), WebhookEvents(statuses=[StatusEvent(channel_id="wamid.OLD", status="read")]))
    await trio.sleep(61.0)  # virtual: the parked statuses are past their ttl
    mine = outbound()
    seq = await writer.write(ledger.accept(mine))
    await writer.write(ledger.mark_sent(NUMBER, seq, mine.sid, "wamid.LATE", wall.now()))
    assert ledger.load(writer.get(b"messages", ledger.sid_key(mine.sid)) or b"").status == "sent"
    # The next status parked sweeps what expired: only it is left.
    await inbox.apply(Info(), WebhookEvents(statuses=[StatusEvent(channel_id="wamid.NEW", status="read")]))
    assert await writer.write(lambda txn: orphans.count(txn, NUMBER)) == 1


async def test_a_forged_status_through_another_numbers_webhook_route_changes_nothing(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "d", simulator_extra="status_webhooks = false")
    with trio.fail_after(30):
        async with running_daemon(cfg) as (daemon, client):
            resp = await client.post(
                f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
                data={"From": "whatsapp:+15550000002", "To": "whatsapp:+15551234567", "Body": "hi"},
            )
            sid = resp.json()["sid"]

            def record() -> ledger.MessageRecord:
                return ledger.load(daemon.store.get(b"messages", ledger.sid_key(sid)) or b"")

            while record().channel_id is None:  # noqa: ASYNC110 - the real actor sends it
                await trio.sleep(0.01)
            wamid = record().channel_id
            forged = {
                "statuses": [
                    {
                        "id": wamid,
                        "status": "failed",
                        "timestamp": "1700000000",
                        "recipient_id": "15551234567",
                        "errors": [{"code": 1026, "title": "forged"}],
                    }
                ]
            }
            body = json.dumps(forged).encode()
            # Authenticated as number 1 (its path secret): answered 200, applied to nothing.
            resp = await client.post("/webhooks/onprem/15550000001/hook-1-secret-0123", content=body)
            assert resp.status_code == 200
            assert record().status == "sent" and record().error_code is None
            metrics = (await client.get("/metrics")).text
            assert 'wadispatch_webhook_unapplied_total{reason="other_number"} 1.0' in metrics
            # Number 2's own webhook applies it.
            resp = await client.post("/webhooks/onprem/15550000002/hook-2-secret-0123", content=body)
            assert resp.status_code == 200 and record().status == "failed"
