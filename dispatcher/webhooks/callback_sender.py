"""Delivers the durable callback queue to customer endpoints, isolated per destination.

Why this shape:

- Cold path, own resources: its own httpx client and a global
  ``CapacityLimiter``; it never touches an actor, so a slow customer cannot
  delay message delivery.
- One *lane* per destination origin, with at most ``per_destination``
  requests in flight and at most ``lane_size`` entries in memory. A failing
  destination backs off as a whole (exponential, capped, jittered) and blocks
  only its own lane; other customers' callbacks keep flowing.
- One message's callbacks in order: a message's callbacks share its URL, so
  its lane holds them in the order they were queued (the order of its status
  changes). A lane never has two of one message's callbacks in flight: the
  next one starts only once the previous was answered and deleted, or given
  up, so a customer sees ``sent``, ``delivered``, ``read`` in that order even
  when the first POST is slow or retried. Other messages still go in parallel.
  The order lives in the keys, so it holds across restarts too.
- The queue in LMDB is the truth (``callbacks.py``), one per bucket (a
  callback lives in the bucket of its number, with its message). A lane takes
  its destination's entries from every bucket; the sender reads each
  destination's FIFO in each bucket from where its lane stopped, on a wake-up after a commit
  and on a timer (writes committed by actors do not wake it), so a restart
  simply starts over from the first pending entry.
- An entry leaves the queue when the customer answered 2xx, refused it for
  good (a 4xx other than 408/429, or a forbidden URL), or it is older than
  ``give_up_after`` (logged ``callback.gave_up``). Delivery is at-least-once:
  each POST carries a stable ``I-Twilio-Idempotency-Token``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Final, cast, final
from urllib.parse import urlencode

import attrs
import httpx
import structlog
import trio

from dispatcher.core import callbacks
from dispatcher.core.buckets import Buckets
from dispatcher.core.callbacks import CallbackEntry
from dispatcher.core.clock import WallClock
from dispatcher.core.ssrf import RefusedURLError, ResolveError, UrlGuard
from dispatcher.core.store import SEP, Store, StoreError, WriteTxn
from dispatcher.webhooks.callback_journal import CallbackJournal, Outcome
from dispatcher.webhooks.twiml import MAX_TWIML, Reply, TwimlError, replies

log = structlog.get_logger()

ReplyHandler = Callable[[bytes, CallbackEntry, list[Reply]], Awaitable[None]]
"""``await on_reply(key, entry, replies)``: create the replies and delete ``key`` in one write."""

_RETRY_STATUSES: Final = frozenset({408, 425, 429})
_USER_AGENT: Final = "wadispatch-callbacks/0.1"
MAX_ANSWER: Final = MAX_TWIML  # more than this is not TwiML we would act on


@attrs.frozen
class SenderSettings:
    concurrency: int = 64
    per_destination: int = 4
    lane_size: int = 256
    timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 600.0
    give_up_after: float = 4 * 3600.0
    poll_interval: float = 0.25


@attrs.define(eq=False)
class _Lane:
    origin: str
    queue: deque[tuple[Store, bytes, CallbackEntry]] = attrs.Factory(deque)
    # Per bucket, the highest key queued so far: the next read resumes after it.
    last_keys: dict[int, bytes] = attrs.Factory(dict)
    busy: set[str] = attrs.Factory(set)  # messages (sids) with a callback in flight
    workers: int = 0
    failures: int = 0
    resume_at: float = -math.inf


@attrs.frozen
class SenderStatistics:
    delivered: int
    retried: int
    gave_up: int
    refused: int
    rejected: int
    lanes: int
    queued_in_memory: int


@attrs.frozen
class LaneState:
    """A destination the sender is working on: what it holds in memory and how it fares."""

    origin: str
    queued_in_memory: int
    in_flight: int
    failures: int  # consecutive failed attempts (0: the last one was answered)
    retry_in: float | None  # seconds until the lane tries again after a failure


@final
class CallbackSender:
    def __init__(
        self,
        *,
        buckets: Buckets,
        client: httpx.AsyncClient,
        auth_token: Callable[[str], str | None],
        guard: UrlGuard,
        wall: WallClock,
        settings: SenderSettings = SenderSettings(),
        on_reply: ReplyHandler | None = None,
        journal: CallbackJournal | None = None,
    ) -> None:
        """``journal`` keeps the recent attempts for operators (a fresh one if not given)."""
        self._buckets = buckets
        self._client = client
        self._auth_token = auth_token  # looked up per attempt: a reload may rotate it
        self._guard = guard
        self._wall = wall
        self._s = settings
        self._on_reply = on_reply
        self.journal = journal if journal is not None else CallbackJournal()
        self._limiter = trio.CapacityLimiter(settings.concurrency)
        self._lanes: dict[str, _Lane] = {}
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.delivered = self.retried = self.gave_up = self.refused = self.rejected = 0

    def wake(self) -> None:
        """New callbacks were committed: read the queue now rather than at the next poll."""
        self._wakeup.set()

    def statistics(self) -> SenderStatistics:
        return SenderStatistics(
            delivered=self.delivered,
            retried=self.retried,
            gave_up=self.gave_up,
            refused=self.refused,
            rejected=self.rejected,
            lanes=len(self._lanes),
            queued_in_memory=sum(len(lane.queue) for lane in self._lanes.values()),
        )

    def lanes(self) -> list[LaneState]:
        """The destinations being worked on now (a destination with nothing pending has none)."""
        now = trio.current_time()
        return [
            LaneState(
                origin=lane.origin,
                queued_in_memory=len(lane.queue),
                in_flight=len(lane.busy),
                failures=lane.failures,
                retry_in=lane.resume_at - now if lane.resume_at > now else None,
            )
            for lane in self._lanes.values()
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled (what is not yet delivered stays queued in LMDB)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._fill()
                with trio.move_on_after(self._s.poll_interval):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()

    # -- reading the queue ----------------------------------------------------------

    def _fill(self) -> None:
        """Top up every destination's lane from every bucket served here (inline: reads are ~1 us each)."""
        for index, store in self._buckets.local():
            self._fill_from(index, store)

    def _fill_from(self, index: int, store: Store) -> None:
        start = b""
        while (key := _first_key(store, start)) is not None:
            prefix = key[: key.index(SEP) + 1]
            origin_ = prefix[:-1].decode()
            lane = self._lanes.get(origin_)
            if lane is None:
                lane = self._lanes[origin_] = _Lane(origin_)
            room = self._s.lane_size - len(lane.queue)
            if room > 0:
                last = lane.last_keys.get(index)
                after = last + b"\x00" if last else prefix
                with contextlib.closing(_scan(store, prefix, after)) as rows:
                    for k, v in itertools.islice(rows, room):
                        lane.queue.append((store, k, callbacks.entry_decoder.decode(v)))
                        lane.last_keys[index] = k
            self._spawn_workers(lane)
            if not lane.queue and lane.workers == 0:
                del self._lanes[origin_]
            start = prefix[:-1] + b"\x01"  # skip to the next destination

    def _spawn_workers(self, lane: _Lane) -> None:
        assert self._nursery is not None
        wanted = min(self._s.per_destination, len(lane.busy) + _ready(lane, self._s.per_destination))
        while lane.workers < wanted:
            lane.workers += 1
            self._nursery.start_soon(self._work, lane)

    # -- one destination ------------------------------------------------------------

    async def _work(self, lane: _Lane) -> None:
        try:
            while lane.queue:
                if trio.current_time() < lane.resume_at:
                    await trio.sleep_until(lane.resume_at)
                    continue
                index = _next_index(lane)
                if index is None:
                    return  # each message left has a callback in flight: its worker goes on
                store, key, entry = lane.queue[index]
                del lane.queue[index]
                lane.busy.add(entry.sid)
                try:
                    done = await self._attempt(store, key, entry)
                finally:
                    lane.busy.discard(entry.sid)
                if done:
                    lane.failures = 0
                    lane.resume_at = -math.inf
                    self._spawn_workers(lane)  # this message's next callback may go now
                else:
                    # Back at the front: before this message's later callbacks, first to retry.
                    lane.queue.appendleft((store, key, entry))
                    lane.failures += 1
                    self.retried += 1
                    delay = min(self._s.backoff_max, self._s.backoff_initial * 2 ** (lane.failures - 1))
                    lane.resume_at = trio.current_time() + delay * random.uniform(0.5, 1.0)
        finally:
            lane.workers -= 1
            if lane.workers == 0 and not lane.queue and self._lanes.get(lane.origin) is lane:
                del self._lanes[lane.origin]

    async def _attempt(self, store: Store, key: bytes, entry: CallbackEntry) -> bool:
        """One delivery attempt; True when the entry is done with (delivered or dropped)."""
        bound = log.bind(number=entry.number, sid=entry.sid, kind=entry.kind, url=entry.url)
        age = self._wall.now() - entry.created_at
        if age > self._s.give_up_after:
            bound.warning("callback.gave_up", age=round(age), give_up_after=self._s.give_up_after)
            self.gave_up += 1
            self._note(entry, "gave_up", error=f"older than {self._s.give_up_after:g} s")
            return await self._finish(store, key)
        token = self._auth_token(entry.account_sid)
        if token is None:
            bound.warning("callback.no_account", account_sid=entry.account_sid)
            self.rejected += 1
            self._note(entry, "rejected", error="unknown account")
            return await self._finish(store, key)
        try:
            target = await self._guard.resolve(entry.url)
        except RefusedURLError as exc:
            bound.warning("callback.refused", reason=str(exc))
            self.refused += 1
            self._note(entry, "refused", error=str(exc))
            return await self._finish(store, key)
        except ResolveError as exc:
            bound.info("callback.unresolved", error=str(exc))
            self._note(entry, "retry", error=str(exc))
            return False
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "host": target.parts.netloc.rpartition("@")[2],
            "user-agent": _USER_AGENT,
            "x-twilio-signature": callbacks.signature(token, entry.url, entry.params),
            "i-twilio-idempotency-token": callbacks.idempotency_token(key, entry),
        }
        ip = f"[{target.ip}]" if ":" in target.ip else target.ip
        pinned = target.parts._replace(netloc=f"{ip}:{target.port}").geturl()
        extensions = {"sni_hostname": target.host} if target.parts.scheme == "https" else {}
        auth = (
            httpx.BasicAuth(target.parts.username, target.parts.password or "")
            if target.parts.username
            else None
        )
        status, answer = 0, b""
        try:
            async with self._limiter:
                # One deadline for the whole exchange: httpx's timeouts are per read, so an
                # endpoint trickling bytes could otherwise hold a slot for ever.
                with trio.move_on_after(self._s.timeout) as deadline:
                    request = self._client.build_request(
                        "POST",
                        pinned,
                        content=urlencode(entry.params).encode(),
                        headers=headers,
                        extensions=extensions,
                        timeout=self._s.timeout,
                    )
                    resp = await self._client.send(
                        request, auth=auth or httpx.USE_CLIENT_DEFAULT, stream=True
                    )
                    try:
                        status = resp.status_code
                        answer = await _read_capped(resp, MAX_ANSWER)
                    finally:
                        await resp.aclose()
        except httpx.HTTPError as exc:
            bound.info("callback.failed", error=type(exc).__name__)
            self._note(entry, "retry", error=type(exc).__name__)
            return False
        if deadline.cancelled_caught:
            bound.info("callback.failed", error="timeout", timeout=self._s.timeout)
            self._note(entry, "retry", error="timeout")
            return False
        if 200 <= status < 300:
            self.delivered += 1
            bound.debug("callback.delivered", status=status)
            self._note(entry, "delivered", http_status=status)
            if entry.kind == "inbound" and self._on_reply is not None:
                return await self._reply(store, key, entry, answer)
            return await self._finish(store, key)
        if status in _RETRY_STATUSES or status >= 500:
            bound.info("callback.failed", status=status)
            self._note(entry, "retry", http_status=status)
            return False
        bound.warning("callback.rejected", status=status)
        self.rejected += 1
        self._note(entry, "rejected", http_status=status)
        return await self._finish(store, key)

    def _note(
        self,
        entry: CallbackEntry,
        outcome: Outcome,
        *,
        http_status: int | None = None,
        error: str | None = None,
    ) -> None:
        self.journal.note(entry, self._wall.now(), outcome, http_status=http_status, error=error)

    async def _reply(self, store: Store, key: bytes, entry: CallbackEntry, answer: bytes) -> bool:
        try:
            found = replies(answer)
        except TwimlError as exc:
            log.warning("callback.twiml_invalid", number=entry.number, sid=entry.sid, error=str(exc))
            found = []
        if not found:
            return await self._finish(store, key)
        assert self._on_reply is not None
        try:
            await self._on_reply(key, entry, found)
        except StoreError as exc:
            log.error("callback.reply_failed", number=entry.number, sid=entry.sid, error=str(exc))
            return False
        return True

    async def _finish(self, store: Store, key: bytes) -> bool:
        try:
            await store.write(delete(key))
        except StoreError as exc:
            log.error("callback.delete_failed", error=str(exc))
            return False
        return True


def _scan(store: Store, prefix: bytes, start: bytes) -> Generator[tuple[bytes, bytes], None, None]:
    """The store's scan generator (closed promptly: it holds a read txn)."""
    return cast("Generator[tuple[bytes, bytes], None, None]", store.scan(callbacks.DB, prefix, start=start))


def _first_key(store: Store, start: bytes) -> bytes | None:
    with contextlib.closing(_scan(store, b"", start)) as rows:
        for key, _ in rows:
            return key
    return None


def _next_index(lane: _Lane) -> int | None:
    """The first queued callback of a message with none in flight (its earliest: FIFO per message)."""
    for index, (_, _, entry) in enumerate(lane.queue):
        if entry.sid not in lane.busy:
            return index
    return None


def _ready(lane: _Lane, enough: int) -> int:
    """How many messages have a callback that could start now, counting up to ``enough``."""
    seen: set[str] = set()
    for _, _, entry in lane.queue:
        if entry.sid not in lane.busy:
            seen.add(entry.sid)
            if len(seen) >= enough:
                break
    return len(seen)


async def _read_capped(resp: httpx.Response, limit: int) -> bytes:
    """The answer's first ``limit`` + 1 bytes at most: a hostile endpoint cannot fill our memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


def delete(key: bytes) -> Callable[[WriteTxn], None]:
    def fn(txn: WriteTxn) -> None:
        txn.delete(callbacks.DB, key)

    return fn
