"""What the simulator's two webhook senders share: scheduling, batching, posting, retrying.

The On-Prem sender (``webhooks``) and the Cloud one (``cloud_hooks``) differ in
their payloads only; the way a webhook travels is the same and is written here:

- Accepting a send only *schedules* (a heap push, O(log n), no I/O, nothing
  built yet), so a slow or dead receiver never slows the message endpoint.
- Jobs are sharded by a key (the recipient) over ``concurrency`` worker tasks,
  each posting one request at a time: a message's ``sent -> delivered -> read``
  (and every message to one recipient) arrive in order, recipients in parallel.
- A worker takes every due job, up to ``batch``, and hands them to its sender
  (``Deliver``) to post as one payload per number: while a POST is in flight,
  the next batch fills by itself.
- A POST is retried with exponential backoff, its destination looked up again
  before each attempt (a number removed meanwhile gets no more); times come
  from ``trio.current_time()`` only, so a MockClock drives all of it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import attrs
import structlog
import trio

from actors.transport import Headers
from dispatcher.simulator.poster import PoolPoster

log = structlog.get_logger(__name__)

J = TypeVar("J")

Post = Callable[[str, bytes, Headers], Awaitable[int]]
"""``await post(url, body, headers) -> HTTP status`` (headers: sent after the JSON content type);
raising counts as a failed attempt."""


@final
@attrs.frozen
class Target:
    """Where one attempt goes: the receiver's URL, the body, any headers past the content type."""

    url: str
    body: bytes
    headers: Headers = attrs.field(factory=list)


@final
class Shard(Generic[J]):
    """A worker's due-time heap and the event that wakes it when an earlier job arrives."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, J]] = []
        self.wakeup = trio.Event()
        self.sleeping_until = -math.inf  # -inf while the worker is awake
        # Bodies held back to arrive out of order (a fault), per number, and when to post them anyway.
        self.held: dict[str, tuple[bytes, float]] = {}


Deliver = Callable[[Shard[J], list[J], Post], Awaitable[None]]
"""Post a shard's due jobs (and any held body whose time came) through ``HookQueue.post`` with the
given ``Post``; may re-queue jobs with ``HookQueue.again``."""


@final
class HookQueue(Generic[J]):
    """Due-time heaps sharded by key, one worker each, and the retrying POST the workers use."""

    def __init__(
        self,
        deliver: Deliver[J],
        *,
        batch: int,
        concurrency: int,
        retries: int,
        retry_delay: float,
        post_timeout: float,
        post: Post | None,
    ) -> None:
        if batch < 1 or concurrency < 1 or retries < 0:
            raise ValueError("batch and concurrency must be >= 1, retries >= 0")
        self._deliver = deliver
        self._batch = batch
        self._retries = retries
        self._retry_delay = retry_delay
        self._post_timeout = post_timeout
        self._post = post
        self._shards: list[Shard[J]] = [Shard() for _ in range(concurrency)]
        self._seq = itertools.count()

    def push(self, key: str, due: float, job: J) -> None:
        """Schedule ``job`` at ``due`` on ``key``'s worker (one key's jobs post in due order)."""
        shard = self._shards[hash(key) % len(self._shards)]
        heapq.heappush(shard.heap, (due, next(self._seq), job))
        if due < shard.sleeping_until:
            shard.wakeup.set()

    def again(self, shard: Shard[J], due: float, job: J) -> None:
        """Re-queue ``job`` on the shard it came from (the next stage of a status walk)."""
        heapq.heappush(shard.heap, (due, next(self._seq), job))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post due webhooks until cancelled; opens pooled connections unless a poster was given."""
        if self._post is not None:
            await self._run_workers(self._post, task_status)
            return
        pools = PoolPoster(max_connections=2 * len(self._shards), timeout=self._post_timeout)
        try:
            await self._run_workers(pools, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await pools.aclose()

    async def post(self, number: str, target: Callable[[], Target | None], post: Post) -> bool | None:
        """POST with retries and exponential backoff, ``target`` asked again before each attempt.

        Returns True once delivered, False after the last attempt failed (logged), None when
        ``target`` has nowhere to deliver (the number was removed or its webhook unset since).
        """
        delay = self._retry_delay
        attempt = 0
        while True:
            where = target()
            if where is None:
                return None
            status = 0
            try:
                with trio.fail_after(self._post_timeout):
                    status = await post(where.url, where.body, where.headers)
            except Exception as exc:  # a dead receiver must not stop the simulator
                log.debug("sim.webhook_error", number=number, url=where.url, attempt=attempt, error=repr(exc))
            if 200 <= status < 300:
                return True
            if attempt == self._retries:
                log.warning(
                    "sim.webhook_failed", number=number, url=where.url, attempts=attempt + 1, status=status
                )
                return False
            attempt += 1
            await trio.sleep(delay)
            delay *= 2

    async def _run_workers(self, post: Post, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self._shards:
                nursery.start_soon(self._work, shard, post)
            task_status.started()

    async def _work(self, shard: Shard[J], post: Post) -> None:
        deliver = self._deliver
        while True:
            jobs = self._take_due(shard)
            now = trio.current_time()
            if jobs or any(until <= now for _, until in shard.held.values()):
                await deliver(shard, jobs, post)
            else:
                await self._sleep(shard)

    def _take_due(self, shard: Shard[J]) -> list[J]:
        """Pop up to ``batch`` due jobs, in due order."""
        now = trio.current_time()
        heap = shard.heap
        jobs: list[J] = []
        while heap and heap[0][0] <= now and len(jobs) < self._batch:
            jobs.append(heapq.heappop(heap)[2])
        return jobs

    async def _sleep(self, shard: Shard[J]) -> None:
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
