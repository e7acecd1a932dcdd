"""The daemon as a BucketHost: what gaining or losing a bucket means here, and building the Ownership.

Gaining bucket b (``OwnedBuckets.gained``): its Store is fenced with the claim's
epoch and a commit records it in the bucket (a stale owner's later write fails; what
it committed before, the outbox recovery sees), its numbers' actors start behind the
bucket's send gate and recover its outbox, and its callbacks and scheduled messages
are served here. Losing it: it is served here no more, each of its actors finishes
its sends in flight (at most ``drain_timeout``) and stops, and its Store is fenced
out (``NOT_OWNER``: a stray write of ours fails instead of landing under the next
owner). The outboxes stay in the bucket for the next owner.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, final

import httpx
import structlog
import trio

from actors.lease import SendLease
from actors.supervisor import Supervisor
from dispatcher.config import ClusterConfig, NumberConfig
from dispatcher.core.buckets import Buckets
from dispatcher.core.dataroot import DataRoot
from dispatcher.core.store import Store, WriteTxn
from dispatcher.ownership.etcd import EtcdOwnership
from dispatcher.ownership.etcd_client import EtcdClient
from dispatcher.ownership.flock import FlockOwnership
from dispatcher.ownership.interface import BucketHost, Ownership
from dispatcher.ownership.leaseclock import LeaseTiming
from dispatcher.service.fleet import Fleet
from dispatcher.service.roster_share import EtcdRoster, RootRoster, SharedRoster

log = structlog.get_logger()

NOT_OWNER: Final = -1  # a Store fenced with it refuses every commit (any recorded epoch is higher)
MEMBERS_DIR: Final = "members"


@final
class OwnedBuckets:
    """The daemon's ``BucketHost``."""

    def __init__(
        self,
        *,
        buckets: Buckets,
        fleet: Fleet,
        supervisor: Supervisor,
        numbers: Callable[[], Sequence[NumberConfig]],
        drain_timeout: float,
        on_change: Callable[[], None],
        announce: Callable[[Store], Awaitable[None]] | None = None,
    ) -> None:
        """``numbers``: the configured numbers now (live reload changes them); ``on_change``: wake
        what serves the local buckets (callbacks, scheduler) after a gain; ``announce``: tell the
        cluster of the gained bucket's numbers its roster lacks (``NumberOps.announce``)."""
        self._buckets = buckets
        self._fleet = fleet
        self._supervisor = supervisor
        self._numbers = numbers
        self._drain = drain_timeout
        self._on_change = on_change
        self._announce = announce
        self.epochs: dict[int, int] = {}
        buckets.serve_none()
        for store in buckets.stores:
            store.fence(NOT_OWNER)

    def _numbers_of(self, bucket: int) -> list[NumberConfig]:
        return [num for num in self._numbers() if self._buckets.index(num.number) == bucket]

    async def gained(self, bucket: int, epoch: int, gate: SendLease) -> None:
        store = self._buckets.stores[bucket]
        if store.recorded_epoch > epoch:
            # Another backend (or another etcd cluster) owned this bucket with higher epochs.
            log.error("cluster.epoch_behind", bucket=bucket, epoch=epoch, recorded=store.recorded_epoch)
        store.fence(epoch)
        # Our epoch goes into the bucket before its actors read the outbox: from this commit on,
        # a stale owner's write fails, and whatever it committed before, the recovery below sees.
        await store.write(_nothing)
        self.epochs[bucket] = epoch
        self._fleet.open_bucket(bucket, gate)
        self._buckets.serve(bucket)
        numbers = self._numbers_of(bucket)
        for num in numbers:
            await self._supervisor.add(self._fleet.build(num))
        log.info("cluster.bucket_started", bucket=bucket, epoch=epoch, numbers=len(numbers))
        self._on_change()
        if self._announce is not None:
            await self._announce(store)

    async def lost(self, bucket: int) -> None:
        self._buckets.stop_serving(bucket)
        async with trio.open_nursery() as nursery:
            for num in self._numbers_of(bucket):
                nursery.start_soon(self._retire, num.number)
        self._buckets.stores[bucket].fence(NOT_OWNER)
        self._fleet.close_bucket(bucket)
        self.epochs.pop(bucket, None)
        log.info("cluster.bucket_stopped", bucket=bucket)

    def suspend(self, bucket: int) -> None:
        self._buckets.stores[bucket].fence(NOT_OWNER)  # every write fails: creates answer 503

    def resume(self, bucket: int) -> None:
        if (epoch := self.epochs.get(bucket)) is not None:
            self._buckets.stores[bucket].fence(epoch)

    async def _retire(self, number: str) -> None:
        actor = self._supervisor.actor(number)
        if actor is None:
            return
        await self._supervisor.retire(number, timeout=self._drain)
        await self._fleet.release(actor)


def _nothing(txn: WriteTxn) -> None:
    """A commit that writes only the epoch (``Store.fence``)."""


def default_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def build_ownership(
    cluster: ClusterConfig,
    *,
    root: DataRoot,
    buckets: Buckets,
    host: BucketHost,
    address: str,
    lane: str,
    send_timeout: float,
    etcd_client: httpx.AsyncClient | None,
) -> Ownership:
    """The configured backend. ``address``: where this daemon takes forwarded requests over
    HTTP, ``lane``: over its lane;
    ``send_timeout``: the longest a send can last (the numbers' longest request_timeout)."""
    owner_id = cluster.owner_id or default_owner_id()
    if cluster.backend == "flock":
        return FlockOwnership(
            host=host,
            buckets=root.count,
            lock_path=root.lock_path,
            members_dir=root.path / MEMBERS_DIR,
            owner_id=owner_id,
            address=address,
            lane=lane,
            poll_interval=cluster.poll_interval,
            epoch_floor=lambda bucket: buckets.stores[bucket].recorded_epoch,
        )
    assert etcd_client is not None
    etcd = cluster.etcd
    return EtcdOwnership(
        host=host,
        client=etcd_client_of(cluster, etcd_client),
        cluster=cluster.name,
        buckets=root.count,
        owner_id=owner_id,
        address=address,
        lane=lane,
        timing=LeaseTiming(ttl=etcd.ttl, margin=etcd.margin, send_timeout=send_timeout, grace=etcd.grace),
    )


def etcd_client_of(cluster: ClusterConfig, http: httpx.AsyncClient) -> EtcdClient:
    """The configured etcd's client (its endpoints, timeout and auth) over ``http``."""
    etcd = cluster.etcd
    return EtcdClient(
        client=http,
        endpoints=etcd.endpoints,
        timeout=etcd.request_timeout,
        username=etcd.username,
        password=etcd.password.resolve_present("cluster.etcd.password") if etcd.password else None,
    )


def shared_roster(
    cluster: ClusterConfig | None, buckets: Buckets, etcd_client: httpx.AsyncClient | None
) -> SharedRoster | None:
    """How the daemons of a cluster learn of the numbers onboarded on one of them: the shared data
    root's records (flock), or etcd's keys; None for a daemon alone."""
    if cluster is None:
        return None
    if cluster.backend == "flock":
        return RootRoster(buckets)
    assert etcd_client is not None
    return EtcdRoster(etcd_client_of(cluster, etcd_client), cluster=cluster.name)


def etcd_http_client(cluster: ClusterConfig) -> httpx.AsyncClient:
    """The HTTP client for etcd's gateway: its CA and client certificate when configured."""
    etcd = cluster.etcd
    verify: bool | str = etcd.ca_file or True
    cert = (etcd.cert_file, etcd.key_file) if etcd.cert_file and etcd.key_file else None
    return httpx.AsyncClient(
        verify=verify,
        cert=cert,
        trust_env=False,
        timeout=httpx.Timeout(etcd.request_timeout),
        limits=httpx.Limits(max_connections=16),
    )
