"""Webhooks from the simulator to the number's ``webhook_url``: statuses and inbound messages.

Why this shape:

- The message endpoint only *schedules* (a heap push, O(log n), no I/O), so a
  slow or dead webhook receiver never slows ``POST /v1/messages``; the queue
  is bounded and what it cannot hold is dropped and counted.
- Jobs are sharded by recipient over ``concurrency`` worker tasks. One worker
  posts its shard's webhooks one POST at a time, so the statuses of one message
  (and messages to one recipient) arrive in order, while recipients proceed in
  parallel.
- A worker takes every job that is due, up to ``batch``, and posts them as one
  payload per number (``statuses`` is a list): while a POST is in flight, the
  next batch fills by itself.
- One job per accepted message walks ``sent -> delivered -> read``, re-queued
  at ``accepted_at + delay[i]``; times come from ``trio.current_time()`` only.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, final

import attrs
import structlog
import trio

from dispatcher.core.clock import WallClock
from dispatcher.simulator.errors import TITLES, USER_NOT_VALID
from dispatcher.simulator.faults import Faults
from dispatcher.simulator.poster import PoolPoster
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

log = structlog.get_logger(__name__)

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


@final
class _Shard:
    """A worker's due-time heap and the event that wakes it when an earlier job arrives."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Job]] = []
        self.wakeup = trio.Event()
        self.sleeping_until = -math.inf  # -inf while the worker is awake
        # A webhook held back to be reordered, per number, and when to post it anyway.
        self.held: dict[str, tuple[bytes, float]] = {}

    def push(self, due: float, seq: int, job: _Job) -> None:
        heapq.heappush(self.heap, (due, seq, job))
        if due < self.sleeping_until:
            self.wakeup.set()


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
        if batch < 1 or concurrency < 1 or queue_size < 1 or retries < 0:
            raise ValueError("batch, concurrency and queue_size must be >= 1, retries >= 0")
        self._numbers = numbers
        self._wall = wall_clock
        self._delays = status_delays
        self._batch = batch
        self._queue_size = queue_size
        self._poster = poster
        self._retries = retries
        self._retry_delay = retry_delay
        self._post_timeout = post_timeout
        self._faults = faults if faults is not None else Faults()
        self._shards = [_Shard() for _ in range(concurrency)]
        self._seq = itertools.count()
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
        self._shard(recipient).push(now + self._delays[0], next(self._seq), job)

    def push_inbound(self, state: NumberState, contact: InboundContact, message: InboundMessage) -> bool:
        """Post a customer's message now; False if the queue was full and it was dropped."""
        if self._pending >= self._queue_size:
            state.counters.webhooks_dropped += 1
            return False
        self._pending += 1
        job = _InboundJob(state.config.digits, contact, message)
        self._shard(message.sender).push(trio.current_time(), next(self._seq), job)
        return True

    def push_raw(self, state: NumberState, body: bytes) -> bool:
        """Post ``body`` to the number's webhook now (with retries); False if dropped (queue full)."""
        if self._pending >= self._queue_size:
            state.counters.webhooks_dropped += 1
            return False
        self._pending += 1
        job = _RawJob(state.config.digits, body)
        self._shard(state.config.digits).push(trio.current_time(), next(self._seq), job)
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post webhooks until cancelled; opens pooled connections unless a poster was given."""
        if self._poster is not None:
            await self._run_workers(self._poster, task_status)
            return
        poster = PoolPoster(max_connections=2 * len(self._shards), timeout=self._post_timeout)
        try:
            await self._run_workers(poster, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await poster.aclose()

    async def _run_workers(self, poster: Poster, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self._shards:
                nursery.start_soon(self._work, shard, poster)
            task_status.started()

    def _shard(self, recipient: str) -> _Shard:
        return self._shards[hash(recipient) % len(self._shards)]

    async def _work(self, shard: _Shard, poster: Poster) -> None:
        while True:
            now = trio.current_time()
            for digits, (body, until) in list(shard.held.items()):
                if until <= now:  # nothing came to overtake it in time
                    del shard.held[digits]
                    await self._post(digits, body, poster)
            statuses, inbound, raw = self._take_due(shard)
            if not statuses and not inbound and not raw:
                await self._sleep(shard)
                continue
            for job in raw:
                await self._post(job.digits, job.body, poster)
            for digits, batch in statuses.items():
                await self._post_faulty(shard, digits, encode(StatusWebhook(statuses=batch)), poster)
            for digits, jobs in inbound.items():
                contacts = [job.contact for job in jobs]
                body = encode(InboundWebhook(contacts=contacts, messages=[job.message for job in jobs]))
                await self._post(digits, body, poster)

    def _take_due(
        self, shard: _Shard
    ) -> tuple[dict[str, list[Status]], dict[str, list[_InboundJob]], list[_RawJob]]:
        """Pop up to ``batch`` due jobs, grouped by number; re-queue unfinished status walks."""
        now = trio.current_time()
        heap = shard.heap
        statuses: dict[str, list[Status]] = {}
        inbound: dict[str, list[_InboundJob]] = {}
        raw: list[_RawJob] = []
        wall_now = self._wall.now()
        timestamp = str(int(wall_now))
        taken = 0
        while heap and heap[0][0] <= now and taken < self._batch:
            _, _, job = heapq.heappop(heap)
            taken += 1
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
                due = job.accepted_at + self._delays[job.stage]
                heapq.heappush(heap, (due, next(self._seq), job))
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

    async def _sleep(self, shard: _Shard) -> None:
        deadline = shard.heap[0][0] if shard.heap else math.inf
        if shard.held:
            deadline = min(deadline, *(until for _, until in shard.held.values()))
        shard.wakeup = trio.Event()
        shard.sleeping_until = deadline
        try:
            with trio.move_on_at(deadline):
                await shard.wakeup.wait()
        finally:
            shard.sleeping_until = -math.inf

    async def _post_faulty(self, shard: _Shard, digits: str, body: bytes, poster: Poster) -> None:
        """Post a status webhook, duplicated or held back behind the next one if the plan says so."""
        plan = self._faults.webhook_plan(digits) if self._faults else None
        if plan is None:
            await self._post(digits, body, poster)
            return
        held = shard.held.pop(digits, None)
        if held is None and self._faults.chance(plan.webhook_reorder_rate):
            self._faults.count(digits, "webhook_reorder")
            shard.held[digits] = (body, trio.current_time() + REORDER_HOLD)
            return
        await self._post(digits, body, poster)
        if held is not None:
            await self._post(digits, held[0], poster)  # the earlier webhook arrives after this one
        if self._faults.chance(plan.webhook_duplicate_rate):
            self._faults.count(digits, "webhook_duplicate")
            await self._post(digits, body, poster)

    async def _post(self, digits: str, body: bytes, poster: Poster) -> None:
        """POST with retries and exponential backoff; then give up and count it."""
        delay = self._retry_delay
        attempt = 0
        while True:
            state = self._numbers.get(digits)
            if state is None or state.webhook_url is None:
                return  # number removed or webhook unset since: nowhere to deliver
            url = state.webhook_url
            status = 0
            try:
                with trio.fail_after(self._post_timeout):
                    status = await poster(url, body)
            except Exception as exc:
                log.debug("sim.webhook_error", number=digits, url=url, attempt=attempt, error=repr(exc))
            if 200 <= status < 300:
                state.counters.webhooks_sent += 1
                return
            if attempt == self._retries:
                state.counters.webhooks_failed += 1
                log.warning("sim.webhook_failed", number=digits, url=url, attempts=attempt + 1, status=status)
                return
            attempt += 1
            await trio.sleep(delay)
            delay *= 2
