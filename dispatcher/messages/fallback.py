"""The fallback task: when a message's fallback falls due, create it through the create path.

Shaped like the scheduler: one task sleeps until the earliest entry of the
``fallbacks`` index (``dispatcher.core.fallbacks``) of every bucket (an entry lives
in the bucket of its message), or until rung (a create with a
plan, a failing status webhook), and polls every ``poll`` seconds for triggers an
actor committed. For each due entry it decides from the message as stored now:

- the awaited status came, the message was canceled, or its fallback exists: the
  entry goes, nothing is sent;
- otherwise the fallback is created by ``Gateway.create`` (the rules, the sender's
  bucket and actor, like any create) with the idempotency key ``fallback <sid>``,
  then linked to the message (``fallback_sid``) and the entry removed. A crash
  between the two finds the entry again after the restart; the key replays the
  fallback already committed instead of creating a second one.

A deadline that finds the message still waiting in its outbox takes it out
(``failed``, 30036) first, its actor held off it as a cancel does, so the customer
gets one message; one already on its way keeps its course, and its late statuses
are recorded (``note_status`` counts a late delivery) without a third send.
A 63016 refusal with a window template sends the template from the same number,
the message's body as its variable; anything else goes from the plan's sender,
with the plan's body or the message's own (a template's text with its values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, final

import msgspec
import structlog
import trio

from dispatcher.core import fallbacks, ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.models import FallbackPlan, MessageRecord
from dispatcher.core.store import Store, StoreError
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.handoff import Handoff
from dispatcher.messages.rules import SendRequest

log = structlog.get_logger()

RETRY_DELAY: Final = 30.0  # seconds before a fallback the store or a drained sender refused is tried again
_json: Final = msgspec.json.Encoder()


def idempotency_key(primary_sid: str) -> str:
    """The fallback's key: a space no customer's key may hold, so it never meets one of theirs."""
    return f"fallback {primary_sid}"


def needed(record: MessageRecord, plan: FallbackPlan, reason: bytes) -> bool:
    """Whether the entry still calls for a fallback, judged on the message as stored now."""
    if record.fallback_sid is not None or record.status == "canceled":
        return False
    if reason == fallbacks.ERROR:
        return fallbacks.triggers(record, plan)
    return plan.from_number is not None and not fallbacks.reached(record.status, plan.awaiting)


def request_for(record: MessageRecord, plan: FallbackPlan) -> SendRequest:
    """The fallback's create: the window template from the same number, or the plan's sender."""
    if record.error_code == fallbacks.WINDOW_CLOSED and plan.window_template is not None:
        return SendRequest(
            to=record.to_number,
            from_=record.from_number,
            body=None,
            status_callback=record.status_callback,
            content_sid=plan.window_template,
            content_variables=_json.encode({plan.window_variable: record.body}).decode(),
            primary_sid=record.sid,
        )
    assert plan.from_number is not None
    return SendRequest(
        to=record.to_number,
        from_=plan.from_number,
        body=plan.body or record.body or None,
        status_callback=record.status_callback,
        media_urls=() if plan.body else tuple(record.media_urls),
        primary_sid=record.sid,
    )


def status_listener(handoff: Handoff, fallbacks: Fallbacks) -> Callable[[str, MessageRecord], None]:
    """What a status webhook that moved a message tells (the inbox's ``on_status``): the sender's
    actor (its statistics), and the fallback task when the message has a plan."""

    def noted(number: str, record: MessageRecord) -> None:
        handoff.note_status(number, record)
        if record.fallback is not None:
            fallbacks.note_status(record)

    return noted


@final
class Fallbacks:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        gateway: Gateway,
        handoff: Handoff,
        alarm: fallbacks.Alarm,
        batch: int = 100,
        poll: float = 1.0,
    ) -> None:
        self._buckets = buckets
        self._wall = wall
        self._gateway = gateway
        self._handoff = handoff  # the sender's actor, held off a message being withdrawn
        self._alarm = alarm
        self._batch = batch
        self._poll = poll
        self._stopping = False
        self.sent = 0  # fallbacks created (or found created after a restart) and linked
        self.refused = 0  # fallbacks the create rules refused for good (fallback_error)
        self.late = 0  # primaries delivered after their fallback went

    def pending(self) -> int:
        return sum(fallbacks.pending(store) for store in self._buckets.stores)

    def stop(self) -> None:
        """Fire nothing more; ``run`` returns (what is not due stays in LMDB)."""
        self._stopping = True
        self._alarm.ring()

    def note_status(self, record: MessageRecord) -> None:
        """A webhook moved ``record``: wake for a trigger it may have committed; count a late delivery."""
        if record.fallback is None:
            return
        if record.fallback_sid is None:
            self._alarm.ring()
        elif record.late_status is not None and record.status == record.late_status:
            self.late += 1  # the status that recorded the late arrival (a later ``read`` is not)
            log.info(
                "fallback.primary_late",
                sid=record.sid,
                number=record.from_number,
                status=record.status,
                fallback_sid=record.fallback_sid,
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Create fallbacks as they fall due until ``stop()`` (or cancelled)."""
        task_status.started()
        self._stopping = False
        while not self._stopping:
            if await self.fire_due() >= self._batch:
                continue
            first = self._first_due()
            delay = self._poll if first is None else min(self._poll, first - self._wall.now())
            if delay > 0:
                await self._alarm.wait(delay)
            else:
                await trio.lowlevel.checkpoint()

    def _first_due(self) -> float | None:
        local = self._buckets.local()  # the buckets this process serves
        dues = [due for _, store in local if (due := fallbacks.first_due(store)) is not None]
        return min(dues, default=None)

    async def fire_due(self) -> int:
        """Handle every entry due now (at most ``batch`` per bucket); returns how many were handled."""
        now = self._wall.now()
        handled = 0
        for _, store in self._buckets.local():
            entries = fallbacks.due(store, now, self._batch)
            for index_key, reason in entries:
                if self._stopping:
                    return handled
                await self._fire(store, index_key, reason)
            handled += len(entries)
        return handled

    async def _fire(self, store: Store, index_key: bytes, reason: bytes) -> None:
        """``store``: the bucket of the message (and of its index entry)."""
        sid = fallbacks.sid_of(index_key)
        raw = store.get(b"messages", ledger.sid_key(sid))
        record = None if raw is None else ledger.load(raw)
        plan = None if record is None else record.fallback
        try:
            if record is None or plan is None or not needed(record, plan, reason):
                await store.write(fallbacks.drop(index_key))
                return
            if reason == fallbacks.TIMER:
                await self._withdraw(store, record, plan)
            await self._create(store, index_key, record, plan, reason)
        except StoreError as exc:
            log.warning("fallback.store_failed", sid=sid, error=str(exc))
            await self._postpone(store, index_key)
        except Exception as exc:  # one message's fallback must not stop every other's, nor the daemon
            log.error("fallback.crashed", sid=sid, exc_info=exc)
            await self._postpone(store, index_key)

    async def _withdraw(self, store: Store, record: MessageRecord, plan: FallbackPlan) -> None:
        """At the deadline, a message still in its outbox leaves it (its actor held off it meanwhile)."""
        actor = self._handoff.actor(record.from_number)
        if actor is not None and not actor.hold(record.sid):
            return  # its send has started: it keeps its course
        try:
            after = (plan.due_at or 0.0) - (record.send_at or record.date_created)
            withdrawn = await store.write(fallbacks.withdraw(record.sid, after, self._wall.now()))
        finally:
            if actor is not None:
                actor.release(record.sid)
        if withdrawn is not None:
            log.info("fallback.primary_withdrawn", sid=record.sid, number=record.from_number)

    async def _create(
        self, store: Store, index_key: bytes, record: MessageRecord, plan: FallbackPlan, reason: bytes
    ) -> None:
        req = request_for(record, plan)
        try:
            fallback = await self._gateway.create(
                record.account_sid, req, idempotency_key=idempotency_key(record.sid)
            )
        except TwilioError as exc:
            if exc.status >= 500:  # not stored, or the sender is drained: later
                log.warning("fallback.postponed", sid=record.sid, code=exc.code, error=exc.message)
                await self._postpone(store, index_key)
                return
            self.refused += 1
            log.warning(
                "fallback.refused",
                sid=record.sid,
                number=record.from_number,
                code=exc.code,
                error=exc.message,
            )
            await store.write(fallbacks.give_up(index_key, f"{exc.code}: {exc.message}", self._wall.now()))
            return
        await store.write(fallbacks.link(index_key, fallback.sid, self._wall.now()))
        self.sent += 1
        log.info(
            "fallback.sent",
            sid=record.sid,
            number=record.from_number,
            fallback_sid=fallback.sid,
            fallback_from=fallback.from_number,
            reason="error" if reason == fallbacks.ERROR else "timer",
            error_code=record.error_code,
        )

    async def _postpone(self, store: Store, index_key: bytes) -> None:
        try:
            await store.write(fallbacks.postpone(index_key, self._wall.now() + RETRY_DELAY))
        except StoreError as exc:
            log.warning("fallback.store_failed", sid=fallbacks.sid_of(index_key), error=str(exc))
            await self._alarm.wait(self._poll)
