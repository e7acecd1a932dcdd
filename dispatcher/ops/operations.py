"""What operators can see and steer: the service behind the admin API.

Kept apart from the web framework (like the Messages resource) so it is tested directly;
the admin routes only authenticate, decode and encode. Answers are msgspec
Structs, the same types the ``wadispatch`` CLI decodes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import msgspec
import structlog
import trio

from actors.number import NumberActor
from actors.supervisor import Supervisor
from dispatcher.core import ledger, number_watch, outbox
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory
from dispatcher.core.models import entry_decoder
from dispatcher.core.store import Store, number_key

log = structlog.get_logger()

MAX_OUTBOX_PAGE = 1000


class NumberStatus(msgspec.Struct, kw_only=True, frozen=True):
    number: str
    account: str
    state: str  # running | paused | draining | starting | restarting | degraded | storage | stopped
    outbox: int
    in_flight: int
    rate: float
    burst: int
    sent: int
    failed: int
    retries: int
    rate_limited: int
    restarts: int
    token_expires_in: float | None
    last_error: str | None = None
    degraded: str | None = None  # why the number is degraded, if it is
    send_rate: float = 0.0  # sends/s in force (below rate while slowed down by 429s)
    # Cloud numbers: recipients held back (pair rate / tier) and the messaging tier's use.
    parked: int = 0
    tier_used: int = 0
    tier_limit: int | None = None
    tier_waits: int = 0
    storage: str | None = None  # storage cannot record this number's outcomes: the last error
    unrecorded: int = 0  # outcomes of sends waiting for storage
    # Cloud numbers: what Meta last said (account webhooks, onboarding, the start-up check).
    quality: str | None = None  # GREEN | YELLOW | RED
    meta_tier: str | None = None  # TIER_2K ...
    throughput_level: str | None = None  # STANDARD | HIGH
    problems: list[str] = []  # flagged | restricted | disabled, in force
    paused_by_meta: bool = False  # paused because of one of them ([watch] pause_on)


class BucketStatus(msgspec.Struct, kw_only=True, frozen=True):
    """One bucket (LMDB environment) of the data root, as this daemon sees it."""

    bucket: int
    commits: int
    queued: int  # writes waiting for its next group commit
    failed_commits: int
    failing: bool
    outbox: int  # entries waiting to be sent, every number of the bucket
    callbacks: int  # customer callbacks waiting
    owned: bool = True  # this daemon owns it (always, without [cluster])
    epoch: int | None = None  # the epoch of our ownership (None: not owned, or no [cluster])
    recorded_epoch: int = 0  # the epoch of the bucket's latest owner, as committed in it


class Status(msgspec.Struct, kw_only=True, frozen=True):
    numbers: list[NumberStatus]
    store_commits: int  # over every bucket
    store_queued: int
    buckets: list[BucketStatus] = []


class OutboxItem(msgspec.Struct, kw_only=True, frozen=True):
    seq: int
    sid: str
    to: str
    status: str
    attempts: int
    date_created: float
    body_chars: int


class Outbox(msgspec.Struct, kw_only=True, frozen=True):
    number: str
    depth: int
    entries: list[OutboxItem]
    truncated: bool


class Ack(msgspec.Struct, kw_only=True, frozen=True):
    number: str
    state: str
    outbox: int


class TokenRefreshed(msgspec.Struct, kw_only=True, frozen=True):
    number: str
    expires_in: float | None
    refreshes: int


class ReloadResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a live reload changed; ``error`` set means it was rejected and nothing changed."""

    ok: bool
    added: list[str] = []
    removed: list[str] = []
    replaced: list[str] = []
    retuned: list[str] = []
    # Changed sections that only a restart applies.
    restart_needed: list[str] = []
    error: str | None = None


class UnknownNumber(LookupError):
    """No such number in the running configuration."""


Reload = Callable[[], Awaitable[ReloadResult]]


@final
class Operations:
    def __init__(
        self,
        *,
        buckets: Buckets,
        supervisor: Supervisor,
        directory: Directory,
        draining: set[str],
        wall: WallClock,
        reload: Reload | None = None,
    ) -> None:
        """``draining``: the numbers refusing new messages, shared with the create rules;
        ``reload``: a live reload (None: this process cannot reload)."""
        self._buckets = buckets
        self._supervisor = supervisor
        self._directory = directory
        self._draining = draining
        self._wall = wall
        self._reload = reload
        self._reload_lock = trio.Lock()

    # -- reading ----------------------------------------------------------------------

    def _actor(self, number: str) -> NumberActor:
        actor = self._supervisor.actor(number)
        if actor is None:
            raise UnknownNumber(number)
        return actor

    def outbox_depth(self, number: str) -> int:
        """Entries in the number's durable outbox (a count kept with it: O(1))."""
        return outbox.depth(self._buckets.for_number(number), number)

    def state(self, number: str) -> str:
        return self._state(self._actor(number), self._supervisor.states())

    def states(self) -> dict[str, str]:
        """Every number's ``state`` at once: one pass over the supervisor, not one per number."""
        states = self._supervisor.states()
        return {actor.number: self._state(actor, states) for actor in self._supervisor.actors()}

    def _state(self, actor: NumberActor, states: dict[str, str]) -> str:
        if actor.number in self._draining:
            return "draining"
        if actor.paused:
            return "paused"
        return states.get(actor.number, "stopped")

    def status(self) -> Status:
        supervisor = self._supervisor
        states = self.states()
        numbers = []
        now = self._wall.now()
        for actor in supervisor.actors():
            stats = actor.statistics()
            info = self._directory.get(actor.number)
            meta = number_watch.load(self._buckets.for_number(actor.number), actor.number)
            numbers.append(
                NumberStatus(
                    number=actor.number,
                    account=info.account_sid if info is not None else "",
                    state=states[actor.number],
                    outbox=self.outbox_depth(actor.number),
                    in_flight=stats.in_flight,
                    rate=stats.rate,
                    burst=stats.burst,
                    sent=stats.sent,
                    failed=stats.failed,
                    retries=stats.retries,
                    rate_limited=stats.rate_limited,
                    restarts=supervisor.restarts(actor.number),
                    token_expires_in=stats.token_expires_in,
                    last_error=supervisor.last_error(actor.number),
                    degraded=stats.degraded,
                    send_rate=stats.send_rate,
                    parked=stats.parked,
                    tier_used=stats.tier_used,
                    tier_limit=stats.tier_limit,
                    tier_waits=stats.tier_waits,
                    storage=stats.storage,
                    unrecorded=stats.unrecorded,
                    quality=meta.quality,
                    meta_tier=meta.messaging_tier,
                    throughput_level=meta.throughput_level,
                    problems=meta.problems(now),
                    paused_by_meta=meta.paused_by_watch,
                )
            )
        buckets = [self.bucket_status(index, store) for index, store in enumerate(self._buckets.stores)]
        return Status(
            numbers=sorted(numbers, key=lambda n: n.number),
            store_commits=sum(b.commits for b in buckets),
            store_queued=sum(b.queued for b in buckets),
            buckets=buckets,
        )

    @staticmethod
    def bucket_status(index: int, store: Store) -> BucketStatus:
        stats = store.statistics()
        return BucketStatus(
            bucket=index,
            commits=stats.commits,
            queued=stats.queued,
            failed_commits=stats.failed_commits,
            failing=stats.failing,
            outbox=store.entries(b"outbox"),
            callbacks=store.entries(b"callbacks"),
            owned=store.epoch is None or store.epoch >= 0,  # a fenced-out Store carries -1
            epoch=store.epoch if store.epoch is not None and store.epoch >= 0 else None,
            recorded_epoch=store.recorded_epoch,
        )

    def outbox(self, number: str, *, limit: int = 100) -> Outbox:
        """The number's pending entries, oldest first (at most ``limit``), and the full depth."""
        self._actor(number)
        limit = max(1, min(limit, MAX_OUTBOX_PAGE))
        prefix = number_key(number)
        store = self._buckets.for_number(number)
        entries: list[OutboxItem] = []
        for key, value in store.scan(b"outbox", prefix):
            if len(entries) >= limit:
                break
            entry = entry_decoder.decode(value)
            raw = store.get(b"messages", ledger.sid_key(entry.sid))
            record = None if raw is None else ledger.load(raw)
            entries.append(
                OutboxItem(
                    seq=int.from_bytes(key[len(prefix) :], "big"),
                    sid=entry.sid,
                    to=entry.to_number,
                    status=record.status if record is not None else "missing",
                    attempts=record.attempts if record is not None else 0,
                    date_created=record.date_created if record is not None else 0.0,
                    body_chars=len(record.body) if record is not None else 0,
                )
            )
        depth = outbox.depth(store, number)
        return Outbox(number=number, depth=depth, entries=entries, truncated=depth > len(entries))

    # -- steering ---------------------------------------------------------------------

    def _ack(self, number: str) -> Ack:
        return Ack(number=number, state=self.state(number), outbox=self.outbox_depth(number))

    def pause(self, number: str) -> Ack:
        self._actor(number).pause()
        return self._ack(number)

    def resume(self, number: str) -> Ack:
        """Resume sending, and accept new messages again if the number was being drained."""
        self._actor(number).resume()
        if number in self._draining:
            self._draining.discard(number)
            log.info("number.drain_ended", number=number)
        return self._ack(number)

    def drain(self, number: str) -> Ack:
        """Refuse new messages for the number and send everything in its outbox.

        The operator watches ``outbox`` fall to zero (the CLI shows a progress bar),
        then removes the number from the config; ``resume`` undoes a drain.
        """
        actor = self._actor(number)
        if number not in self._draining:
            self._draining.add(number)
            log.info("number.draining", number=number, outbox=self.outbox_depth(number))
        actor.resume()
        return self._ack(number)

    async def refresh_token(self, number: str) -> TokenRefreshed:
        """Log in again now (e.g. after a password change), single-flight with the actor's own refresh."""
        actor = self._actor(number)
        await actor.refresh_credentials()
        stats = actor.statistics()
        return TokenRefreshed(
            number=number, expires_in=stats.token_expires_in, refreshes=stats.token_refreshes
        )

    async def reload(self) -> ReloadResult:
        """Re-read the config and apply it (one reload at a time)."""
        if self._reload is None:
            return ReloadResult(ok=False, error="live reload is not available in this process")
        async with self._reload_lock:
            return await self._reload()
