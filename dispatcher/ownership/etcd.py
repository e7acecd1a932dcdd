"""Ownership across hosts: etcd leases and create-if-absent claims.

A daemon holds one etcd lease (``ttl`` seconds, renewed by keepalives) and
registers itself under ``/wadispatch/{cluster}/members/{owner id}`` with it. It
claims a bucket with a transaction that creates ``/wadispatch/{cluster}/owners/{b}``
under its lease only if the key is absent; the key's create revision is the
bucket's epoch (the Store fences every commit with it). The value names the owner
and the addresses that take forwarded requests (HTTP, and its lane). When the lease lapses, etcd
deletes the keys: the buckets are free for the others.

Safety comes from the lease arithmetic (``leaseclock``): an owner starts no send
that could outlive its lease, counted from the *sending* of its last successful
keepalive; a new owner waits ``grace`` after its claim before its first send.
Without a quorum keepalives fail: sends stop when the window closes, creates for
the buckets are refused (``owner()`` is None, the front door answers 503), and
everything resumes when a keepalive succeeds again (etcd keeps leases across a
leader election). A keepalive that finds the lease gone means the buckets may be
someone else's already: every one is drained and the daemon joins again.

Members are counted for the fair share; a watch on the cluster's keys wakes the
claim loop at once when a bucket is freed or a member comes or goes (the loop
also runs every ``poll_interval`` in case the watch is down).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Final, final

import msgspec
import structlog
import trio

from dispatcher.ownership.balance import fair_share, to_release, to_take
from dispatcher.ownership.etcd_client import EtcdClient, EtcdError, KeyValue
from dispatcher.ownership.flock import Holder
from dispatcher.ownership.interface import BucketHost, Owner
from dispatcher.ownership.leaseclock import BucketGate, LeaseClock, LeaseTiming

log = structlog.get_logger()

POLL_INTERVAL: Final = 1.0
RETRY_DELAY: Final = 0.5
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Holder).decode


@final
class EtcdOwnership:
    """The ``etcd`` backend of ``Ownership``."""

    def __init__(
        self,
        *,
        host: BucketHost,
        client: EtcdClient,
        cluster: str,
        buckets: int,
        owner_id: str,
        address: str,
        timing: LeaseTiming,
        lane: str = "",
        poll_interval: float = POLL_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self._host = host
        self._client = client
        self._count = buckets
        self._owner_id = owner_id
        self._address = address
        self._lane = lane
        self._timing = timing
        self._poll = poll_interval
        self._retry = retry_delay
        prefix = f"/wadispatch/{cluster}/".encode()
        self._prefix = prefix
        self._owners_prefix = prefix + b"owners/"
        self._members_prefix = prefix + b"members/"
        self._record = _encode(Holder(owner_id=owner_id, address=address, lane=lane))
        self.clock = LeaseClock(timing)
        self._lease_id: int | None = None
        self._claims: dict[int, int] = {}  # bucket -> epoch (its key's create revision)
        self._view: dict[int, Owner] = {}
        self._view_at = -float("inf")  # when the last survey was sent
        self._revision = 0
        self._live = 1
        self._healthy = False
        self._stopping = False
        self._wake = trio.Event()
        self._session_over = trio.Event()
        self.takeovers = 0
        self.lease_losses = 0

    @property
    def owner_id(self) -> str:
        return self._owner_id

    def _key(self, bucket: int) -> bytes:
        return self._owners_prefix + str(bucket).encode()

    # -- run ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, claim and keep buckets until ``stop()``; ``started()`` after the first round
        (also when etcd cannot be reached: the daemon serves, answering 503 for its creates)."""
        started = False
        try:
            while not self._stopping:
                if await self._join():
                    await self._balance_logged()
                if not started:
                    task_status.started()
                    started = True
                if self._lease_id is None:
                    await self._pause(self._retry)
                    continue
                await self._session()
                await self._lose_all("lease_lost" if not self._stopping else "stopping")
        finally:
            with trio.CancelScope(shield=True):
                await self._let_go()

    def stop(self) -> None:
        self._stopping = True
        self._session_over.set()
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._session_over.wait()

    async def _join(self) -> bool:
        """A new lease, and this daemon's member key under it; False if etcd could not be reached."""
        sent_at = trio.current_time()
        try:
            lease_id, ttl = await self._client.grant(round(self._timing.ttl))
            await self._client.put(self._members_prefix + self._owner_id.encode(), self._record, lease_id)
        except EtcdError as exc:
            self._unhealthy("ownership.join_failed", exc)
            return False
        self._lease_id = lease_id
        self._session_over = trio.Event()
        self.clock.renewed(sent_at, ttl)
        self._healthy = True
        log.info("ownership.joined", lease=lease_id, ttl=ttl, owner_id=self._owner_id)
        return True

    async def _session(self) -> None:
        """Keep the lease alive and the claims balanced until the lease is gone or ``stop()``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keepalive_loop)
            nursery.start_soon(self._claim_loop)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self._window_loop)
            await self._session_over.wait()
            nursery.cancel_scope.cancel()

    # -- the lease --------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        assert self._lease_id is not None
        every = self._timing.keepalive_every
        while True:
            sent_at = trio.current_time()
            try:
                ttl = await self._client.keepalive(self._lease_id)
            except EtcdError as exc:
                self._unhealthy("ownership.keepalive_failed", exc)
                await trio.sleep_until(sent_at + min(every, self._retry))
                continue
            if ttl <= 0:
                log.error("ownership.lease_expired", lease=self._lease_id, owned=sorted(self._claims))
                self.lease_losses += 1
                self.clock.lapsed()
                self._lease_id = None
                self._session_over.set()
                return
            self.clock.renewed(sent_at, ttl)
            if not self._healthy:
                log.info("ownership.keepalive_recovered", lease=self._lease_id, owned=sorted(self._claims))
                self._healthy = True
                self._wake.set()
            await trio.sleep_until(sent_at + every)

    async def _window_loop(self) -> None:
        """When the send window closes with no renewal, our claims may lapse any moment: the
        buckets take no more writes (``BucketHost.suspend``) until a keepalive succeeds."""
        while True:
            until = self.clock.until
            await trio.sleep_until(until)
            if self.clock.until > until:
                continue  # renewed in time
            suspended = list(self._claims)
            log.warning("ownership.suspended", owned=suspended, lease=self._lease_id)
            for bucket in suspended:
                self._host.suspend(bucket)
            while not self.clock.valid(trio.current_time()):
                if self._lease_id is None:
                    return  # the lease lapsed (etcd said so): the session ends, the claims with it
                await self.clock.wait_renewed()
            for bucket in suspended:
                if bucket in self._claims:
                    self._host.resume(bucket)
            log.info("ownership.resumed", owned=sorted(self._claims))

    def _unhealthy(self, event: str, exc: Exception) -> None:
        if self._healthy or self._lease_id is None:
            log.warning(event, error=str(exc), owned=sorted(self._claims))
        self._healthy = False

    # -- claims -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            with trio.move_on_after(self._poll):
                await self._wake.wait()
            self._wake = trio.Event()
            await self._balance_logged()

    async def _watch_loop(self) -> None:
        """Wake the claim loop whenever anything under the cluster's prefix changes."""
        while True:
            try:
                async for revision in self._client.watch_prefix(self._prefix, self._revision + 1):
                    self._revision = max(self._revision, revision)
                    self._wake.set()
            except EtcdError as exc:
                log.debug("ownership.watch_broken", error=str(exc))
            await trio.sleep(self._retry)

    async def _balance_logged(self) -> None:
        try:
            await self._balance()
        except EtcdError as exc:
            self._unhealthy("ownership.survey_failed", exc)

    async def _balance(self) -> None:
        lease_id = self._lease_id
        if lease_id is None or not self.clock.valid(trio.current_time()):
            return  # no claim without a live lease: it could lapse under the new bucket at once
        sent_at = trio.current_time()
        members, _ = await self._client.range_prefix(self._members_prefix)
        owners, revision = await self._client.range_prefix(self._owners_prefix)
        self._revision = max(self._revision, revision)
        self._view = self._owners_of(owners)
        self._view_at = sent_at
        self._live = max(1, len(members))
        for bucket, epoch in list(self._claims.items()):
            seen = self._view.get(bucket)
            if seen is None or seen.epoch != epoch:  # our key is gone: the lease lapsed under it
                log.error("ownership.claim_vanished", bucket=bucket, epoch=epoch, now=seen)
                await self._lose(bucket)
        share = fair_share(self._count, self._live)
        free = [b for b in range(self._count) if b not in self._view]
        start = zlib.crc32(self._owner_id.encode()) % self._count
        for bucket in to_take(free, len(self._claims), share, start=start, buckets=self._count):
            if self._stopping or self._lease_id != lease_id:
                return
            await self._claim(bucket, lease_id)
        for bucket in to_release(list(self._claims), share):
            await self._release(bucket)

    def _owners_of(self, kvs: list[KeyValue]) -> dict[int, Owner]:
        view: dict[int, Owner] = {}
        for kv in kvs:
            tail = kv.key_bytes[len(self._owners_prefix) :]
            try:
                bucket = int(tail)
                holder = _decode(kv.value_bytes)
            except (ValueError, msgspec.DecodeError):
                log.warning("ownership.foreign_key", key=kv.key_bytes[:200])
                continue
            if 0 <= bucket < self._count:
                view[bucket] = Owner(holder.owner_id, holder.address, kv.create_revision, holder.lane)
        return view

    async def _claim(self, bucket: int, lease_id: int) -> None:
        created, held, revision = await self._client.create(self._key(bucket), self._record, lease_id)
        if not created:
            if held is not None:
                holder = _decode(held.value_bytes)
                self._view[bucket] = Owner(holder.owner_id, holder.address, held.create_revision, holder.lane)
            return
        epoch = revision
        opens_at = trio.current_time() + self._timing.grace
        self._claims[bucket] = epoch
        self._view[bucket] = Owner(self._owner_id, self._address, epoch, self._lane)
        self.takeovers += 1
        log.info("ownership.gained", bucket=bucket, epoch=epoch, live=self._live, grace=self._timing.grace)
        await self._host.gained(bucket, epoch, BucketGate(self.clock, opens_at=opens_at))

    async def _lose(self, bucket: int) -> None:
        """The bucket is not ours any more: drain its actors (they send nothing more: gate or stop)."""
        self._claims.pop(bucket, None)
        with trio.CancelScope(shield=True):
            await self._host.lost(bucket)
        log.info("ownership.lost", bucket=bucket)

    async def _release(self, bucket: int) -> None:
        """Let go of an extra bucket: drain it first, then delete its key if it is still ours."""
        epoch = self._claims.get(bucket)
        if epoch is None:
            return
        await self._lose(bucket)
        try:
            await self._client.delete_if_created(self._key(bucket), epoch)
        except EtcdError as exc:
            log.warning("ownership.release_failed", bucket=bucket, error=str(exc))  # it lapses with the lease
        self._view.pop(bucket, None)

    async def _lose_all(self, why: str) -> None:
        if self._claims:
            log.warning("ownership.losing_all", reason=why, owned=sorted(self._claims))
        for bucket in list(self._claims):
            await self._lose(bucket)

    async def _let_go(self) -> None:
        """Shutting down: drain every bucket, delete its key, end the lease (the member key goes with it)."""
        for bucket in list(self._claims):
            await self._release(bucket)
        if self._lease_id is not None:
            lease_id, self._lease_id = self._lease_id, None
            self.clock.lapsed()
            try:
                await self._client.revoke(lease_id)
            except EtcdError as exc:
                log.warning("ownership.revoke_failed", error=str(exc))  # it lapses by itself

    # -- views --------------------------------------------------------------------------

    @property
    def live(self) -> int:
        return self._live

    @property
    def healthy(self) -> bool:
        return self._healthy

    def owner(self, bucket: int) -> Owner | None:
        now = trio.current_time()
        epoch = self._claims.get(bucket)
        if epoch is not None:
            # Ours only while the lease surely lives (a create stored now is sent by us).
            return Owner(self._owner_id, self._address, epoch, self._lane) if self.clock.valid(now) else None
        if now - self._view_at >= self._timing.ttl:
            return None  # the view may name an owner whose lease has lapsed since
        return self._view.get(bucket)

    def owned(self) -> Mapping[int, int]:
        return dict(self._claims)

    def status(self) -> Mapping[str, object]:
        now = trio.current_time()
        return {
            "backend": "etcd",
            "owner_id": self._owner_id,
            "healthy": self._healthy,
            "lease": self._lease_id,
            "sending": self.clock.valid(now),
            "send_window_left": round(max(0.0, self.clock.until - now), 3),
            "live": self._live,
            "fair_share": fair_share(self._count, self._live),
            "owned": dict(sorted(self._claims.items())),
            "takeovers": self.takeovers,
            "lease_losses": self.lease_losses,
        }
