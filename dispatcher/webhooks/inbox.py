"""Applies channel-neutral webhook events: statuses, inbound messages, TwiML replies.

Every channel's webhook route decodes its payload into ``WebhookEvents`` and
calls ``Inbox.apply``; nothing here knows the channel. One delivery is one
store write (one group commit): every status moves its message forward (or
parks it until we know the channel id), every inbound message becomes an
``inbound`` Messages record, opens the 24 h window and queues the customer's
webhook, and the status callbacks are queued in the same transaction.
A redelivered inbound message (same channel id) is recognised and skipped.

A status only moves a message its own number sent: the webhook was
authenticated for one number, and a channel id of another number's message
(another tenant's, perhaps) changes nothing (``ledger.apply_status``). That,
and whatever the decoder could not apply as it came (``events.unapplied``), is
logged and counted by reason (``unapplied``, on ``/metrics``), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, final

import attrs
import structlog

from dispatcher.core import callbacks, ledger, orphans, window
from dispatcher.core.bucketing import slot_of
from dispatcher.core.buckets import Buckets
from dispatcher.core.callbacks import CallbackEntry
from dispatcher.core.events import InboundEvent, Unapplied, WebhookEvents
from dispatcher.core.models import MessageRecord, StoredMedia, new_sid
from dispatcher.core.store import WriteTxn
from dispatcher.core.twilio import API_VERSION

if TYPE_CHECKING:
    from dispatcher.core.clock import WallClock

log = structlog.get_logger()

LOGGED_PER_DELIVERY: Final = 20  # unapplied items logged one by one; the rest in one summary line


class InboxNumber(Protocol):
    """What the inbox needs to know about the number a webhook is for."""

    @property
    def number(self) -> str: ...
    @property
    def account_sid(self) -> str: ...
    @property
    def status_callback(self) -> str | None: ...
    @property
    def inbound_url(self) -> str | None: ...
    @property
    def prefix(self) -> str: ...


@attrs.frozen
class Applied:
    """What one webhook delivery changed."""

    moved: list[MessageRecord]  # messages whose status moved forward
    inbound: list[MessageRecord]  # new inbound messages (duplicates excluded)
    duplicates: int
    callbacks: int  # customer callbacks queued
    refused: list[Unapplied] = attrs.Factory(list)  # statuses naming another number's message


def media_url(public_url: str, account_sid: str, message_sid: str, media_sid: str) -> str:
    return f"{public_url}/{API_VERSION}/Accounts/{account_sid}/Messages/{message_sid}/Media/{media_sid}"


@final
class Inbox:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        public_url: Callable[[], str],
        wake_callbacks: Callable[[], None] = lambda: None,
        on_status: Callable[[str, MessageRecord], None] | None = None,
        orphan_limits: orphans.Limits = orphans.Limits(),  # noqa: B008 (frozen, immutable)
    ) -> None:
        """``public_url``: how customers reach us, for inbound media links (read per delivery: the
        front door's address is known once it listens). ``wake_callbacks``: the callback sender,
        told that callbacks were queued. ``on_status``: a number's actor, told its message moved."""
        self._buckets = buckets
        self._wall = wall
        self._public_url = public_url
        self._wake = wake_callbacks
        self._on_status = on_status
        self._orphan_limits = orphan_limits
        self.unapplied: dict[
            str, int
        ] = {}  # by reason: what authentic webhooks carried that we could not apply

    async def apply(self, info: InboxNumber, events: WebhookEvents) -> Applied:
        """Apply a whole delivery atomically; raises StoreError if it could not be committed."""
        now = self._wall.now()
        public_url = self._public_url()
        store = self._buckets.for_number(info.number)  # the number's bucket holds all it applies
        applied = await store.write(lambda txn: self._apply(txn, info, events, now, public_url))
        if self._on_status is not None:
            for record in applied.moved:
                self._on_status(info.number, record)
        for record in applied.inbound:
            log.info(
                "message.received",
                number=info.number,
                sid=record.sid,
                wamid=record.channel_id,
                num_media=record.num_media,
            )
        for error in events.errors:
            log.warning("webhook.system_error", number=info.number, code=error.code, title=error.title)
        self.report(info.number, [*events.unapplied, *applied.refused])
        if applied.callbacks:
            self._wake()
        return applied

    def _apply(
        self, txn: WriteTxn, info: InboxNumber, events: WebhookEvents, now: float, public_url: str
    ) -> Applied:
        before = _callback_count(txn)
        moved: list[MessageRecord] = []
        refused: list[Unapplied] = []
        limits = self._orphan_limits
        for status in events.statuses:
            outcome, updated = ledger.apply_status(
                info.number,
                status.channel_id,
                status.status,
                status.error_code,
                status.error_message,
                now,
                limits,
            )(txn)
            if outcome == "other_number":
                refused.append(Unapplied("other_number", f"status {status.channel_id[:80]}", status.status))
            if updated is not None:
                moved.append(updated)
                log.info(
                    "message.status",
                    number=info.number,
                    sid=updated.sid,
                    wamid=status.channel_id,
                    status=updated.status,
                    error_code=updated.error_code,
                )
        created: list[MessageRecord] = []
        duplicates = 0
        for event in events.inbound:
            record = self._receive(txn, info, event, now, public_url)
            if record is None:
                duplicates += 1
            else:
                created.append(record)
        return Applied(moved, created, duplicates, _callback_count(txn) - before, refused)

    def report(self, number: str | None, unapplied: list[Unapplied]) -> None:
        """Log and count what a delivery carried that could not be applied as it came (``number``:
        the number it came for; None for what an app-level delivery names no number of ours by)."""
        for item in unapplied:
            self.unapplied[item.reason] = self.unapplied.get(item.reason, 0) + 1
        for item in unapplied[:LOGGED_PER_DELIVERY]:
            log.warning(
                "webhook.unapplied", number=number, reason=item.reason, where=item.where, detail=item.detail
            )
        if len(unapplied) > LOGGED_PER_DELIVERY:
            reasons = sorted({item.reason for item in unapplied[LOGGED_PER_DELIVERY:]})
            log.warning(
                "webhook.unapplied_more",
                number=number,
                count=len(unapplied) - LOGGED_PER_DELIVERY,
                reasons=reasons,
            )

    def _receive(
        self, txn: WriteTxn, info: InboxNumber, event: InboundEvent, now: float, public_url: str
    ) -> MessageRecord | None:
        if txn.get(b"wamid", ledger.wamid_key(event.channel_id)) is not None:
            return None  # WhatsApp redelivered a message we already have
        slot = slot_of(info.number)  # stored in our number's bucket: its sids name it
        sid = new_sid("MM" if event.media else "SM", slot)
        record = MessageRecord(
            sid=sid,
            account_sid=info.account_sid,
            from_number=event.sender,
            to_number=info.number,
            body=event.body,
            status="received",
            direction="inbound",
            date_created=now,
            date_updated=now,
            date_sent=_sent_at(event.timestamp, now),
            num_media=len(event.media),
            channel_id=event.channel_id,
            media=[
                StoredMedia(new_sid("ME", slot), m.media_id, m.content_type, event.kind) for m in event.media
            ],
            address_prefix=info.prefix,
        )
        ledger.insert(txn, record)
        txn.put(b"wamid", ledger.wamid_key(event.channel_id), sid.encode())
        # A customer's clock cannot hold the window open: never later than now.
        window.touch(txn, info.number, event.sender, record.date_sent or now)
        if info.inbound_url:
            replied = txn.get(b"wamid", ledger.wamid_key(event.reply_to)) if event.reply_to else None
            urls = [media_url(public_url, info.account_sid, sid, m.sid) for m in record.media]
            callbacks.queue(
                txn,
                CallbackEntry(
                    kind="inbound",
                    url=info.inbound_url,
                    account_sid=info.account_sid,
                    number=info.number,
                    customer=event.sender,
                    sid=sid,
                    params=callbacks.inbound_params(
                        record, event, urls, replied.decode() if replied is not None else None
                    ),
                    created_at=now,
                ),
            )
        return record


def _sent_at(timestamp: float, now: float) -> float:
    return now if timestamp <= 0 else min(timestamp, now)


def _callback_count(txn: WriteTxn) -> int:
    stat: int = txn.txn.stat(txn.db(callbacks.DB))["entries"]
    return stat
