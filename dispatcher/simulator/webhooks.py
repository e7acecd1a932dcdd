"""The simulator's On-Prem webhooks to the number's ``webhook_url``: statuses and inbound messages.

How they travel (scheduled without I/O, sharded by recipient, batched, retried)
is ``hook_queue``'s, shared with the Cloud sender. Here: what is posted. One job
per accepted message walks ``sent -> delivered -> read`` (re-queued at
``accepted_at + delay[i]``), and a worker's due statuses go out as one
``{"statuses": [...]}`` per number; a customer's messages as one
``{"contacts", "messages"}``; a prepared body (``Simulator.emit_status``) as it
is. The queue is bounded: what it cannot hold is dropped and counted. Webhook
faults (delay, duplicate, reorder) are applied here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, final

import attrs
import trio

from actors.transport import Headers
from dispatcher.core.clock import WallClock
from dispatcher.simulator.errors import TITLES, USER_NOT_VALID
from dispatcher.simulator.faults import Faults
from dispatcher.simulator.hook_queue import HookQueue, Post, Shard, Target
from dispatcher.simulator.state import NumberState
from dispatcher.simulator.wire import (
    PRICING,
    Conversation,
    InboundContact,
    InboundMessage,
    InboundWebhook,
    Status,
    StatusError,
    StatusWebhook,
    encode,
)

Poster = Callable[[str, bytes], Awaitable[int]]
"""``await poster(url, json_body) -> HTTP status``; raising counts as a failed attempt."""

STAGES: tuple[Literal["sent"], Literal["delivered"], Literal["read"]] = ("sent", "delivered", "read")
_NOT_A_USER = [StatusError(code=USER_NOT_VALID, title=TITLES[USER_NOT_VALID])]
REORDER_HOLD = 1.0
"""Longest a webhook is held back for reordering when no later one overtakes it."""


@final
@attrs.define(eq=False)
class _StatusJob:
    digits: str
    msg_id: str
    recipient: str
    accepted_at: float
    failed: bool
    stage: int = 0
    conversation: Conversation | None = None  # opened by the first status, kept by the next


@final
@attrs.frozen(eq=False)
class _InboundJob:
    digits: str
    contact: InboundContact
    message: InboundMessage


@final
@attrs.frozen(eq=False)
class _RawJob:
    """A prepared webhook body, posted as is (``Simulator.emit_status``)."""

    digits: str
    body: bytes


_Job = _StatusJob | _InboundJob | _RawJob


def conversation_id(digits: str, recipient: str, wall_now: float) -> str:
    """One conversation per (number, recipient, UTC day): 32 hex digits like the real ids."""
    key = f"{digits}:{recipient}:{int(wall_now // 86_400)}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@final
class WebhookSender:
    """Schedules and posts webhooks for every number in ``numbers`` (a live mapping by digits)."""

    def __init__(
        self,
        numbers: Mapping[str, NumberState],
        wall_clock: WallClock,
        *,
        status_delays: tuple[float, float, float] | None,
        batch: int,
        concurrency: int,
        queue_size: int,
        poster: Poster | None,
        retries: int,
        retry_delay: float,
        post_timeout: float,
        faults: Faults | None = None,
    ) -> None:
        if status_delays is not None and (
            min(status_delays) < 0 or list(status_delays) != sorted(status_delays)
        ):
            raise ValueError("status_delays must be non-negative and non-decreasing")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self._numbers = numbers
        self._wall = wall_clock
        self._delays = status_delays
        self._queue_size = queue_size
        self._faults = faults if faults is not None else Faults()
        self._queue: HookQueue[_Job] = HookQueue(
            self._deliver,
            batch=batch,
            concurrency=concurrency,
            retries=retries,
            retry_delay=retry_delay,
            post_timeout=post_timeout,
            post=None if poster is None else _without_headers(poster),
        )
        self._pending = 0

    @property
    def pending(self) -> int:
        """Jobs queued and not yet fully posted (a message counts once for its 3 statuses)."""
        return self._pending

    def push_status(self, state: NumberState, msg_id: str, recipient: str, *, failed: bool) -> None:
        """Schedule ``sent/delivered/read`` (or one ``failed``) for an accepted message."""
        if self._delays is None or state.webhook_url is None:
            return
        if self._pending >= self._queue_size:
            state.counters.webhooks_dropped += 1
            return
        now = trio.current_time()
        plan = self._faults.webhook_plan(state.config.digits) if self._faults else None
        if plan is not None and plan.webhook_delay:
            now += plan.webhook_delay  # every status of this message comes that much later
            self._faults.count(state.config.digits, "webhook_delay")
        self._pending += 1
        job = _StatusJob(state.config.digits, msg_id, recipient, now, failed)
        self._queue.push(recipient, now + self._delays[0], job)

    def push_inbound(self, state: NumberState, contact: InboundContact, message: InboundMessage) -> bool:
        """Post a customer's message now; False if the queue was full and it was dropped."""
        if self._pending >= self._queue_size:
            state.counters.webhooks_dropped += 1
            return False
        self._pending += 1
        job = _InboundJob(state.config.digits, contact, message)
        self._queue.push(message.sender, trio.current_time(), job)
        return True

    def push_raw(self, state: NumberState, body: bytes) -> bool:
        """Post ``body`` to the number's webhook now (with retries); False if dropped (queue full)."""
        if self._pending >= self._queue_size:
            state.counters.webhooks_dropped += 1
            return False
        self._pending += 1
        job = _RawJob(state.config.digits, body)
        self._queue.push(state.config.digits, trio.current_time(), job)
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post webhooks until cancelled; opens pooled connections unless a poster was given."""
        await self._queue.run(task_status=task_status)

    async def _deliver(self, shard: Shard[_Job], jobs: list[_Job], post: Post) -> None:
        """Held-back webhooks whose time came, then the due jobs: raw bodies, statuses, inbound."""
        now = trio.current_time()
        for digits, (body, until) in list(shard.held.items()):
            if until <= now:  # nothing came to overtake it in time
                del shard.held[digits]
                await self._post(digits, body, post)
        statuses, inbound, raw = self._group(shard, jobs)
        for job in raw:
            await self._post(job.digits, job.body, post)
        for digits, batch in statuses.items():
            await self._post_faulty(shard, digits, encode(StatusWebhook(statuses=batch)), post)
        for digits, inbound_jobs in inbound.items():
            contacts = [job.contact for job in inbound_jobs]
            body = encode(InboundWebhook(contacts=contacts, messages=[job.message for job in inbound_jobs]))
            await self._post(digits, body, post)

    def _group(
        self, shard: Shard[_Job], jobs: list[_Job]
    ) -> tuple[dict[str, list[Status]], dict[str, list[_InboundJob]], list[_RawJob]]:
        """Due jobs grouped by number; unfinished status walks re-queued at their next stage."""
        statuses: dict[str, list[Status]] = {}
        inbound: dict[str, list[_InboundJob]] = {}
        raw: list[_RawJob] = []
        wall_now = self._wall.now()
        timestamp = str(int(wall_now))
        for job in jobs:
            if isinstance(job, _InboundJob):
                self._pending -= 1
                inbound.setdefault(job.digits, []).append(job)
                continue
            if isinstance(job, _RawJob):
                self._pending -= 1
                raw.append(job)
                continue
            statuses.setdefault(job.digits, []).append(self._status(job, wall_now, timestamp))
            if job.failed or job.stage + 1 == len(STAGES):
                self._pending -= 1
            else:
                assert self._delays is not None  # jobs exist only when statuses are on
                job.stage += 1
                self._queue.again(shard, job.accepted_at + self._delays[job.stage], job)
        return statuses, inbound, raw

    def _status(self, job: _StatusJob, wall_now: float, timestamp: str) -> Status:
        if job.failed:
            return Status(job.msg_id, job.recipient, "failed", timestamp, errors=_NOT_A_USER)
        conversation = job.conversation
        if conversation is None:
            conversation = job.conversation = Conversation(
                conversation_id(job.digits, job.recipient, wall_now)
            )
        return Status(
            job.msg_id,
            job.recipient,
            STAGES[job.stage],
            timestamp,
            conversation=conversation,
            pricing=PRICING,
        )

    async def _post_faulty(self, shard: Shard[_Job], digits: str, body: bytes, post: Post) -> None:
        """Post a status webhook, duplicated or held back behind the next one if the plan says so."""
        plan = self._faults.webhook_plan(digits) if self._faults else None
        if plan is None:
            await self._post(digits, body, post)
            return
        held = shard.held.pop(digits, None)
        if held is None and self._faults.chance(plan.webhook_reorder_rate):
            self._faults.count(digits, "webhook_reorder")
            shard.held[digits] = (body, trio.current_time() + REORDER_HOLD)
            return
        await self._post(digits, body, post)
        if held is not None:
            await self._post(digits, held[0], post)  # the earlier webhook arrives after this one
        if self._faults.chance(plan.webhook_duplicate_rate):
            self._faults.count(digits, "webhook_duplicate")
            await self._post(digits, body, post)

    async def _post(self, digits: str, body: bytes, post: Post) -> None:
        """POST to the number's webhook (retried by the queue); counted on the number."""

        def target() -> Target | None:
            state = self._numbers.get(digits)
            if state is None or state.webhook_url is None:
                return None  # number removed or webhook unset since: nowhere to deliver
            return Target(state.webhook_url, body)

        delivered = await self._queue.post(digits, target, post)
        state = self._numbers.get(digits)
        if delivered is None or state is None:
            return
        if delivered:
            state.counters.webhooks_sent += 1
        else:
            state.counters.webhooks_failed += 1


def _without_headers(poster: Poster) -> Post:
    """A given ``poster(url, body)`` as the queue's ``Post`` (On-Prem webhooks add no headers)."""

    async def post(url: str, body: bytes, headers: Headers) -> int:
        return await poster(url, body)

    return post
