"""TwiML replies: the ``<Message>`` elements a customer's inbound webhook answered with.

The callback sender hands over the replies it parsed from the answer to an
inbound webhook; each is judged under a create's rules (body length, media
count, URLs, SSRF guard), queued as an ``outbound-reply`` message of the number
that received the inbound one, and the webhook's callback entry is deleted, in
one write. A reply that breaks a rule is logged and skipped, never sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol, final

import structlog

from dispatcher.core import callbacks, ledger
from dispatcher.core.bucketing import slot_of
from dispatcher.core.buckets import Buckets
from dispatcher.core.callbacks import CallbackEntry
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.store import WriteTxn
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.compose import Content, compose
from dispatcher.messages.compose import apply as apply_content
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.webhooks.inbox import InboxNumber
from dispatcher.webhooks.twiml import Reply

log = structlog.get_logger()

MAX_REPLY_BODY: Final = 1600


class Notifier(Protocol):
    def __call__(self, number: str, seq: int, record: MessageRecord, part: int = 0) -> None: ...


@final
class TwimlReplies:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        numbers: Callable[[str], InboxNumber | None],
        notify: Notifier | None = None,
        media_guard: MediaGuard | None = None,
    ) -> None:
        """``numbers``: the replying number's settings (its status callback); ``notify``: its actor,
        told of each reply queued; ``media_guard``: the SSRF check of a reply's media URLs."""
        self._buckets = buckets
        self._wall = wall
        self._numbers = numbers
        self._notify = notify
        self._media_guard = media_guard

    async def _reply_content(self, account_sid: str, reply: Reply) -> Content:
        """A TwiML reply's content under a create's rules (media count, URLs, SSRF guard)."""
        content = compose(
            account_sid,
            body=reply.body,
            media_urls=reply.media,
            content_sid=None,
            content_variables=None,
            validity_period=None,
            templates=None,
            max_body=MAX_REPLY_BODY,
        )
        if content.media_urls and self._media_guard is not None:
            await self._media_guard.check(content.media_urls)
        return content

    async def reply(self, key: bytes, entry: CallbackEntry, replies: list[Reply]) -> None:
        """TwiML ``<Message>`` replies to an inbound webhook: queue them and drop the callback, atomically.

        A crash before the commit retries the webhook; after it, the replies are
        queued exactly once.
        """
        info = self._numbers(entry.number)
        now = self._wall.now()
        records: list[MessageRecord] = []
        for reply in replies:
            prefix = info.prefix if info is not None else "whatsapp:"
            if reply.to is not None and reply.to.removeprefix(prefix) != entry.customer:
                log.warning("twiml.reply_ignored", number=entry.number, sid=entry.sid, reason="other to")
                continue
            if len(reply.body) > MAX_REPLY_BODY:
                log.warning("twiml.reply_ignored", number=entry.number, sid=entry.sid, reason="too long")
                continue
            try:
                content = await self._reply_content(entry.account_sid, reply)
            except TwilioError as exc:
                log.warning(
                    "twiml.reply_ignored",
                    number=entry.number,
                    sid=entry.sid,
                    reason=exc.message,
                    code=exc.code,
                )
                continue
            record = MessageRecord(
                sid=new_sid("MM" if content.media_urls else "SM", slot_of(entry.number)),
                account_sid=entry.account_sid,
                from_number=entry.number,
                to_number=entry.customer,
                body=reply.body,
                status="queued",
                direction="outbound-reply",
                date_created=now,
                date_updated=now,
                status_callback=info.status_callback if info is not None else None,
                address_prefix=prefix,
            )
            records.append(apply_content(record, content, start=now))

        def fn(txn: WriteTxn) -> list[int]:
            txn.delete(callbacks.DB, key)
            return [ledger.accept(record)(txn) for record in records]

        # The inbound message's callback and the replies (from the same number) share its bucket.
        seqs = await self._buckets.for_number(entry.number).write(fn)
        for seq, record in zip(seqs, records, strict=True):
            log.info("message.reply_queued", number=record.from_number, sid=record.sid, reply_to=entry.sid)
            if self._notify is not None:
                for part in range(record.parts):  # a media reply: one outbox entry per URL
                    self._notify(record.from_number, seq + part, record, part)
