"""The fleet across every daemon of a cluster: the console's fleet page and the status's numbers.

Each number runs in one daemon, its bucket's owner. A fleet page is put together by the
daemon asked: its own share (``FleetView.part``) and each other owner's, asked over the peer
pool concurrently and within ``timeout``, merged in the page's order (``fleet_view.merge``),
so the page, its counts and its paging are those of one daemon running every number. An
owner that does not answer is named on the page (``FleetPage.unreachable``) rather than
failing it: the console is what an operator opens when a host is in trouble.

The status's numbers (``GET /admin/v1/status?scope=cluster``) come from the cluster view's
statuses (``ClusterView``): every reachable daemon's numbers, in number order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, final

import structlog
import trio

from dispatcher.ops.cluster import ClusterStatus, OwnerTable
from dispatcher.ops.fleet_view import FleetPage, FleetPart, FleetQuery, FleetView, merge
from dispatcher.ops.operations import BucketStatus, Status
from dispatcher.ownership.interface import Owner

log = structlog.get_logger()

ASK_TIMEOUT: Final = 3.0

AskFleet = Callable[[str, FleetQuery], Awaitable[FleetPart]]
"""``await ask(address, query)``: that daemon's share of the page (raises if it cannot be had)."""


@final
class ClusterFleet:
    def __init__(
        self, *, count: int, owners: OwnerTable, view: FleetView, ask: AskFleet, timeout: float = ASK_TIMEOUT
    ) -> None:
        self._count = count
        self._owners = owners
        self._view = view
        self._ask = ask
        self._timeout = timeout

    async def page(self, query: FleetQuery) -> FleetPage:
        me = self._owners.owner_id
        others: dict[str, Owner] = {}
        for bucket in range(self._count):
            owner = self._owners.owner(bucket)
            if owner is not None and owner.owner_id != me:
                others.setdefault(owner.owner_id, owner)
        parts = [self._view.part(query)]
        unreachable: list[str] = []

        async def ask(owner: Owner) -> None:
            try:
                with trio.fail_after(self._timeout):
                    parts.append(await self._ask(owner.address, query))
            except Exception as exc:  # one daemon's failure is shown, the others' numbers still are
                log.warning(
                    "fleet.part_failed", owner=owner.owner_id, address=owner.address, error=repr(exc)[:300]
                )
                unreachable.append(owner.owner_id)

        async with trio.open_nursery() as nursery:
            for owner in others.values():
                nursery.start_soon(ask, owner)
        return merge(query, parts, sorted(unreachable))


def cluster_numbers(cluster: ClusterStatus) -> Status:
    """One status over every reachable daemon: their numbers in number order, each bucket as its
    owner reports it, the store figures summed."""
    statuses = [d.status for d in cluster.daemons if d.status is not None]
    owned: dict[int, BucketStatus] = {}
    for daemon in cluster.daemons:
        if daemon.status is None:
            continue
        for bucket in daemon.status.buckets:
            if bucket.bucket in daemon.buckets:
                owned[bucket.bucket] = bucket
    return Status(
        numbers=sorted((n for s in statuses for n in s.numbers), key=lambda n: n.number),
        store_commits=sum(s.store_commits for s in statuses),
        store_queued=sum(s.store_queued for s in statuses),
        buckets=[owned[b] for b in sorted(owned)],
    )
