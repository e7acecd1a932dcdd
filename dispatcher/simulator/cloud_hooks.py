"""Posting the simulator's Cloud webhooks: signed, batched per number, in order per recipient.

The On-Prem sender's shape (``webhooks``) in the Cloud envelope:

- Accepting a send only *schedules* (a heap push, no I/O, nothing built yet),
  so a slow webhook receiver never slows ``POST /{version}/{id}/messages``.
- Jobs are sharded by recipient over ``concurrency`` worker tasks, each posting
  one request at a time: a message's ``sent -> delivered -> read`` (and every
  message to one recipient) arrive in order, recipients proceed in parallel.
- A worker takes every due job, up to ``batch``, and posts one envelope per
  number whose ``value.statuses`` lists them all (Meta's envelope is a list
  there too); a customer's inbound message goes in its own POST.
- One job per accepted message walks its stages, re-queued at
  ``accepted_at + delay[stage]``; times come from ``trio.current_time()`` only.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import msgspec
import structlog
import trio

from dispatcher.core.clock import WallClock
from dispatcher.simulator.poster import PoolPoster

log = structlog.get_logger(__name__)

SignedPoster = Callable[[str, bytes, dict[str, str]], Awaitable[int]]
"""``await poster(url, body, headers) -> HTTP status``; raising counts as a failed attempt."""

STAGES: Final = ("sent", "delivered", "read")
_encoder: Final = msgspec.json.Encoder()
_ORIGIN: Final = {"type": "utility"}
_PRICING: Final = {"billable": True, "pricing_model": "PMP", "category": "utility"}


@attrs.frozen
class Destination:
    """Where a number's webhooks go and how they are signed (looked up when posting)."""

    url: str
    app_secret: str
    waba_id: str
    metadata: dict[str, str]


Lookup = Callable[[str], Destination | None]
"""Phone number id -> its destination, or None when removed or its webhook URL unset."""
Counter = Callable[[str, bool], None]
"""Called once per POST with the phone number id and whether it was delivered."""


@final
@attrs.define(eq=False, slots=True)
class _Walk:
    """One accepted message's statuses: ``sent -> delivered -> read``, or one ``failed``."""

    pnid: str
    wamid: str
    digits: str
    failure: tuple[int, str] | None
    accepted_at: float
    stage: int = 0
    # Built at the first stage, shared by the next two (a hash each: not once per stage).
    contact: dict[str, str] | None = None
    conversation: dict[str, Any] | None = None


@final
@attrs.frozen(eq=False)
class _Value:
    """A prepared ``value`` (an inbound message), posted as it is."""

    pnid: str
    value: dict[str, Any]


@final
class _Shard:
    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Walk | _Value]] = []
        self.wakeup = trio.Event()
        self.sleeping_until = -math.inf  # -inf while its worker is awake

    def push(self, due: float, seq: int, job: _Walk | _Value) -> None:
        heapq.heappush(self.heap, (due, seq, job))
        if due < self.sleeping_until:
            self.wakeup.set()


def sign(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def user_id(digits: str) -> str:
    """A stable business-scoped user id for a customer (``US.<digits>``), as Meta adds since 2026."""
    return "US." + str(int(hashlib.sha256(digits.encode()).hexdigest()[:16], 16))


@final
class CloudHooks:
    """Schedules and posts the webhooks of every Cloud number of one simulator."""

    def __init__(
        self,
        *,
        lookup: Lookup,
        count: Counter,
        wall_clock: WallClock,
        status_delays: tuple[float, float, float] | None,
        batch: int = 1,
        concurrency: int = 1,
        retries: int = 3,
        retry_delay: float = 0.2,
        poster: SignedPoster | None = None,
    ) -> None:
        if batch < 1 or concurrency < 1 or retries < 0:
            raise ValueError("batch and concurrency must be >= 1, retries >= 0")
        self._lookup = lookup
        self._count = count
        self._wall = wall_clock
        self._delays = status_delays
        self._batch = batch
        self._retries = retries
        self._retry_delay = retry_delay
        self._poster = poster
        self._shards = [_Shard() for _ in range(concurrency)]
        self._seq = itertools.count()

    def push_statuses(self, pnid: str, wamid: str, digits: str, failure: tuple[int, str] | None) -> None:
        """Schedule an accepted message's statuses (``failure``: one ``failed`` with that code)."""
        if self._delays is None:
            return
        now = trio.current_time()
        self._shard(digits).push(
            now + self._delays[0], next(self._seq), _Walk(pnid, wamid, digits, failure, now)
        )

    def push_value(self, pnid: str, digits: str, value: dict[str, Any]) -> None:
        """Post ``value`` (a customer's message from ``digits``) now."""
        self._shard(digits).push(trio.current_time(), next(self._seq), _Value(pnid, value))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post due webhooks until cancelled; opens pooled connections unless a poster was given."""
        if self._poster is not None:
            await self._run_workers(self._poster, task_status)
            return
        pools = PoolPoster(max_connections=2 * len(self._shards), timeout=10.0)

        async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
            extra = [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items() if k != "content-type"
            ]
            return await pools(url, body, extra)

        try:
            await self._run_workers(post, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await pools.aclose()

    async def _run_workers(self, poster: SignedPoster, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self._shards:
                nursery.start_soon(self._work, shard, poster)
            task_status.started()

    def _shard(self, digits: str) -> _Shard:
        return self._shards[hash(digits) % len(self._shards)]

    async def _work(self, shard: _Shard, poster: SignedPoster) -> None:
        while True:
            statuses, values = self._take_due(shard)
            if not statuses and not values:
                await self._sleep(shard)
                continue
            for pnid, (items, contacts) in statuses.items():
                await self._post(pnid, {"contacts": list(contacts.values()), "statuses": items}, poster)
            for job in values:
                await self._post(job.pnid, job.value, poster)

    def _take_due(
        self, shard: _Shard
    ) -> tuple[dict[str, tuple[list[dict[str, Any]], dict[str, dict[str, str]]]], list[_Value]]:
        """Pop up to ``batch`` due jobs: statuses grouped by number; unfinished walks re-queued."""
        now = trio.current_time()
        heap = shard.heap
        statuses: dict[str, tuple[list[dict[str, Any]], dict[str, dict[str, str]]]] = {}
        values: list[_Value] = []
        timestamp = str(int(self._wall.now()))
        taken = 0
        while heap and heap[0][0] <= now and taken < self._batch:
            _, _, job = heapq.heappop(heap)
            taken += 1
            if isinstance(job, _Value):
                values.append(job)
                continue
            items, contacts = statuses.setdefault(job.pnid, ([], {}))
            items.append(_status(job, timestamp))
            if job.contact is None:
                job.contact = {"wa_id": job.digits, "user_id": user_id(job.digits)}
            contacts.setdefault(job.digits, job.contact)
            if job.failure is None and job.stage + 1 < len(STAGES):
                assert self._delays is not None  # walks exist only when statuses are on
                job.stage += 1
                heapq.heappush(heap, (job.accepted_at + self._delays[job.stage], next(self._seq), job))
        return statuses, values

    async def _sleep(self, shard: _Shard) -> None:
        deadline = shard.heap[0][0] if shard.heap else math.inf
        shard.wakeup = trio.Event()
        shard.sleeping_until = deadline
        try:
            with trio.move_on_at(deadline):
                await shard.wakeup.wait()
        finally:
            shard.sleeping_until = -math.inf

    async def _post(self, pnid: str, value: dict[str, Any], poster: SignedPoster) -> None:
        """Sign and POST with retries and exponential backoff; then give up and count it."""
        delay = self._retry_delay
        for attempt in range(self._retries + 1):
            target = self._lookup(pnid)
            if target is None:
                return  # number removed or webhook unset since: nowhere to deliver
            body = _encoder.encode(
                {
                    "object": "whatsapp_business_account",
                    "entry": [
                        {
                            "id": target.waba_id,
                            "changes": [
                                {
                                    "field": "messages",
                                    "value": {
                                        "messaging_product": "whatsapp",
                                        "metadata": target.metadata,
                                        **value,
                                    },
                                }
                            ],
                        }
                    ],
                }
            )
            signature = sign(target.app_secret, body)
            headers = {"content-type": "application/json", "x-hub-signature-256": signature}
            try:
                status = await poster(target.url, body, headers)
            except Exception as exc:  # a dead receiver must not stop the simulator
                log.info("sim.cloud_webhook_error", url=target.url, error=str(exc)[:200], attempt=attempt)
                status = 0
            if 200 <= status < 300:
                self._count(pnid, True)
                return
            if attempt < self._retries:
                await trio.sleep(delay)
                delay *= 2
        self._count(pnid, False)


def _status(walk: _Walk, timestamp: str) -> dict[str, Any]:
    if walk.failure is not None:
        code, title = walk.failure
        return {
            "id": walk.wamid,
            "status": "failed",
            "timestamp": timestamp,
            "recipient_id": walk.digits,
            "errors": [{"code": code, "title": title, "message": title, "error_data": {"details": title}}],
        }
    if walk.conversation is None:
        walk.conversation = {"id": hashlib.md5(walk.digits.encode()).hexdigest(), "origin": _ORIGIN}
    return {
        "id": walk.wamid,
        "status": STAGES[walk.stage],
        "timestamp": timestamp,
        "recipient_id": walk.digits,
        "conversation": walk.conversation,
        "pricing": _PRICING,
    }
