"""Intake: a validated create committed durably and handed to its number's actor; fetch.

Kept apart from the web framework so it is tested directly, and so every
intake path (Twilio form, JSON, batch) shares one write and one hand-off. The
rules a create must pass are ``rules.CreateRules``'. A message is written to the
bucket of its sender (its idempotency key too: judged in the bucket of the
sender the create resolves to); a batch is one write per bucket it touches,
committed concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, final

import structlog
import trio

from dispatcher.core import callbacks, fallbacks, ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import StoreError, WriteTxn
from dispatcher.core.twilio import TwilioError, store_unavailable
from dispatcher.messages import idempotency, scheduler
from dispatcher.messages.handoff import Handoff
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.messages.rules import CreateRules, SendRequest
from dispatcher.messages.scheduler import Scheduler
from dispatcher.messages.services import Services

if TYPE_CHECKING:
    from actors.number import NumberActor

log = structlog.get_logger()


def _refused(record: MessageRecord) -> Callable[[WriteTxn], int]:
    """Store a message refused for the window whose fallback stands in: kept ``failed``, never
    queued (its status callback queued with it); returns 0."""

    def fn(txn: WriteTxn) -> int:
        ledger.insert(txn, record)
        callbacks.status_changed(txn, record, record.date_created)
        return 0

    return fn


@final
class Gateway:
    def __init__(
        self,
        *,
        buckets: Buckets,
        rules: CreateRules,
        handoff: Handoff,
        scheduler: Scheduler,
        alarm: fallbacks.Alarm,
        media_guard: MediaGuard | None = None,
    ) -> None:
        self._buckets = buckets
        self._rules = rules
        self._handoff = handoff
        self._scheduler = scheduler
        self._alarm = alarm  # wakes the fallback task: a create with a plan was committed
        # SSRF check of MediaUrl hosts at create (the daemon always sets one).
        self._media_guard = media_guard

    def intake(self, record: MessageRecord) -> Callable[[WriteTxn], int]:
        """The one write that accepts a validated ``record``: stored, then queued (every part) or
        scheduled, its sticky sender kept. Returns the first outbox seq (0 if scheduled)."""
        if record.status == "scheduled":
            store_it = scheduler.schedule(record)
        elif record.status == "failed":
            store_it = _refused(record)
        else:
            store_it = ledger.accept(record)
        service_sid = record.messaging_service_sid
        watched = record.fallback is not None

        def fn(txn: WriteTxn) -> int:
            seq = store_it(txn)
            if service_sid is not None:
                Services.remember(txn, service_sid, record.to_number, record.from_number)
            if watched:
                fallbacks.watch(txn, record, record.date_created)
            return seq

        return fn

    def intake_many(self, records: list[MessageRecord]) -> Callable[[WriteTxn], list[int]]:
        """``intake`` of many records in one write; each record's first seq (0 if scheduled)."""
        if all(
            r.status == "queued" and r.messaging_service_sid is None and r.fallback is None for r in records
        ):
            return ledger.accept_many(records)
        each = [self.intake(record) for record in records]

        def fn(txn: WriteTxn) -> list[int]:
            return [intake(txn) for intake in each]

        return fn

    def handoff_many(self, seqs: Sequence[int], records: Sequence[MessageRecord]) -> None:
        """``handoff`` after ``intake_many`` committed, each number's actor looked up once;
        one debug line for the lot instead of one per message."""
        actors: dict[str, NumberActor | None] = {}
        scheduled = 0
        for seq, record in zip(seqs, records, strict=True):
            if record.fallback is not None:
                self._alarm.ring()
            if record.status == "scheduled":
                scheduled += 1
                continue
            if record.status == "failed":
                continue  # refused for the window: its fallback goes instead
            number = record.from_number
            if number in actors:
                actor = actors[number]
            else:
                actor = actors[number] = self._handoff.actor(number)
            if actor is not None:
                for part in range(record.parts):
                    actor.notify(seq + part, record, part)
        if scheduled:
            self._scheduler.wake()
        log.debug("messages.accepted", messages=len(records) - scheduled, scheduled=scheduled)

    async def accept_many(self, records: list[MessageRecord]) -> list[StoreError | None]:
        """``intake_many`` committed in one write per bucket (concurrently), then ``handoff_many``.

        Returns, per record in order, None if it is stored or the StoreError of its bucket's
        write (nothing of that bucket's records was written; the other buckets' are stored).
        """
        buckets = self._buckets
        if buckets.count == 1:
            try:
                seqs = await buckets.home.write(self.intake_many(records))
            except StoreError as exc:
                return [exc] * len(records)
            self.handoff_many(seqs, records)
            return [None] * len(records)
        groups: dict[int, list[int]] = {}
        for i, record in enumerate(records):
            groups.setdefault(buckets.index(record.from_number), []).append(i)
        outcome: list[StoreError | None] = [None] * len(records)

        async def write_bucket(index: int, members: list[int]) -> None:
            group = [records[i] for i in members]
            try:
                seqs = await buckets.stores[index].write(self.intake_many(group))
            except StoreError as exc:
                for i in members:
                    outcome[i] = exc
                return
            self.handoff_many(seqs, group)

        async with trio.open_nursery() as nursery:
            for index, members in groups.items():
                nursery.start_soon(write_bucket, index, members)
        return outcome

    def handoff(self, seq: int, record: MessageRecord) -> None:
        """After ``intake`` committed: wake the number's actor for every part, or the scheduler;
        and the fallback task for a message with a plan."""
        if record.fallback is not None:
            self._alarm.ring()
        if record.status == "failed":
            log.info("message.refused_for_window", sid=record.sid, number=record.from_number)
            return
        if record.status == "scheduled":
            self._scheduler.wake()
            log.debug("message.scheduled", sid=record.sid, number=record.from_number, send_at=record.send_at)
            return
        for part in range(record.parts):
            self._handoff.notify_part(seq + part, record, part)
        log.debug("message.accepted", sid=record.sid, number=record.from_number, seq=seq)

    async def create(
        self, account_sid: str, req: SendRequest, *, idempotency_key: str | None = None
    ) -> MessageRecord:
        """Validate, commit durably (record + outbox entries, one fsync shared), wake the actor.

        With an idempotency key, a create already seen returns the original message.
        """
        record = self._rules.validate(account_sid, req)
        if record.media_urls and self._media_guard is not None:
            await self._media_guard.check(record.media_urls)
        intake = self.intake(record)
        write: Callable[[WriteTxn], int | idempotency.Replay] = (
            intake
            if idempotency_key is None
            else idempotency.accept_once(
                account_sid,
                idempotency_key,
                idempotency.fingerprint(req.identity()),
                record,
                record.date_created,
                accept=intake,
            )
        )
        try:
            seq = await self._buckets.for_number(record.from_number).write(write)
        except idempotency.KeyConflict:
            raise TwilioError(
                422, 20001, "This idempotency key was already used with different parameters."
            ) from None
        except StoreError as exc:
            log.error("message.store_failed", sid=record.sid, error=str(exc))
            raise store_unavailable(exc, "the message") from exc
        if isinstance(seq, idempotency.Replay):
            log.info("message.idempotent_replay", sid=seq.record.sid, number=record.from_number)
            return seq.record
        self.handoff(seq, record)
        return record

    def fetch(self, account_sid: str, sid: str) -> MessageRecord:
        found = self._buckets.message(sid)
        if found is not None:
            record = ledger.load(found[1])
            if record.account_sid == account_sid:
                return record
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"
        raise TwilioError(404, 20404, f"The requested resource {uri} was not found")
