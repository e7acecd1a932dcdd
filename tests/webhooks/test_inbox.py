"""Inbox: channel-neutral events applied in one write, callbacks queued in the same transaction."""

from __future__ import annotations

import attrs
import trio

from dispatcher.core import callbacks, ledger
from dispatcher.core.callbacks import CallbackEntry, entry_decoder
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.events import InboundEvent, StatusEvent, WebhookEvents
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store
from dispatcher.webhooks.inbox import Inbox
from dispatcher.webhooks.replies import TwimlReplies
from dispatcher.webhooks.twiml import Reply
from tests.helpers.buckets import as_buckets

ACCOUNT = "AC00000000000000000000000000000001"
NUMBER = "+15550000001"
CUSTOMER = "+15551234567"


@attrs.frozen
class Info:
    number: str = NUMBER
    account_sid: str = ACCOUNT
    status_callback: str | None = "https://app.example/status"
    inbound_url: str | None = "https://app.example/inbound"
    prefix: str = "whatsapp:"


def make_inbox(store: Store) -> Inbox:
    return Inbox(
        buckets=as_buckets(store),
        wall=TrioWallClock(start=1_700_000_000.0),
        public_url=lambda: "https://gw.example",
    )


def make_replies(store: Store, notified: list[tuple[str, int, MessageRecord]]) -> TwimlReplies:
    return TwimlReplies(
        buckets=as_buckets(store),
        wall=TrioWallClock(start=1_700_000_000.0),
        numbers=lambda n: Info() if n == NUMBER else None,
        notify=lambda n, seq, r, part=0: notified.append((n, seq, r)),
    )


def queued(store: Store) -> list[CallbackEntry]:
    return [entry_decoder.decode(v) for _, v in store.scan(callbacks.DB, b"")]


def outbound(sid: str = "SM" + "0" * 32) -> MessageRecord:
    return MessageRecord(
        sid=sid,
        account_sid=ACCOUNT,
        from_number=NUMBER,
        to_number=CUSTOMER,
        body="hi",
        status_callback="https://app.example/status",
    )


async def test_a_status_that_beats_the_send_answer_is_applied_with_its_callbacks(writer: Store) -> None:
    inbox = make_inbox(writer)
    record = outbound()
    seq = await writer.write(ledger.accept(record))
    # The "read" webhook arrives before the actor recorded the wamid: parked, nothing queued yet.
    applied = await inbox.apply(
        Info(), WebhookEvents(statuses=[StatusEvent(channel_id="gBGG1", status="read")])
    )
    assert applied.moved == [] and queued(writer) == []
    await writer.write(ledger.mark_sent(NUMBER, seq, record.sid, "gBGG1", 1_700_000_001.0))
    stored = ledger.load(writer.get(b"messages", ledger.sid_key(record.sid)) or b"")
    assert stored.status == "read"
    assert [dict(e.params)["MessageStatus"] for e in queued(writer)] == ["sent", "read"]


async def test_a_message_without_a_callback_url_queues_nothing(writer: Store) -> None:
    plain = MessageRecord(sid="SM" + "1" * 32, account_sid=ACCOUNT, from_number=NUMBER, to_number=CUSTOMER)
    seq = await writer.write(ledger.accept(plain))
    await writer.write(ledger.mark_failed(NUMBER, seq, plain.sid, 63016, "window", 1.0))
    assert queued(writer) == []


async def test_inbound_record_window_and_webhook_commit_together(writer: Store) -> None:
    inbox = make_inbox(writer)
    event = InboundEvent(channel_id="ABGG1", sender=CUSTOMER, kind="text", timestamp=9e12, body="hey")
    applied = await inbox.apply(Info(), WebhookEvents(inbound=[event, event]))  # repeated in one delivery
    [record] = applied.inbound
    assert applied.duplicates == 1 and applied.callbacks == 1
    assert record.direction == "inbound" and record.status == "received" and record.sid.startswith("SM")
    # A timestamp from the future does not hold the window open beyond now.
    assert record.date_sent is not None and record.date_sent <= trio.current_time() + 1_700_000_000.0 + 1
    [hook] = queued(writer)
    assert hook.kind == "inbound" and hook.url == "https://app.example/inbound" and hook.customer == CUSTOMER


async def test_twiml_replies_and_the_callback_delete_are_one_write(writer: Store) -> None:
    notified: list[tuple[str, int, MessageRecord]] = []
    inbox, twiml = make_inbox(writer), make_replies(writer, notified)
    event = InboundEvent(channel_id="ABGG2", sender=CUSTOMER, kind="text", timestamp=1.0, body="q")
    await inbox.apply(Info(), WebhookEvents(inbound=[event]))
    [(key, value)] = list(writer.scan(callbacks.DB, b""))
    hook = entry_decoder.decode(value)
    replies = [Reply("one"), Reply("elsewhere", to="whatsapp:+15559999999"), Reply("x" * 1601), Reply("two")]
    await twiml.reply(key, hook, replies)
    assert queued(writer) == []
    assert [(n, r.body, r.direction, r.to_number) for n, _, r in notified] == [
        (NUMBER, "one", "outbound-reply", CUSTOMER),
        (NUMBER, "two", "outbound-reply", CUSTOMER),
    ]
    assert all(r.status_callback == "https://app.example/status" for _, _, r in notified)
    assert writer.count(b"outbox", b"") == 2
