"""The cluster as one view: every daemon that owns buckets, what it owns, and its own status.

Any daemon answers it (``GET /admin/v1/cluster``, ``wadispatch status --cluster``): it
groups the buckets by their owner (the ownership's view, the one forwarding uses),
asks each other owner for its ``/admin/v1/status`` over the peer pool, concurrently
and within ``timeout``, and adds its own. An owner that does not answer is listed
as unreachable with the buckets it holds; a bucket without an owner is listed as
such (creates for it answer 503 until one takes it). Without ``[cluster]`` the
daemon owns every bucket and the view is that one daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, final

import msgspec
import structlog
import trio

from dispatcher.ops.operations import Status
from dispatcher.ownership.interface import Owner

log = structlog.get_logger()

ASK_TIMEOUT: Final = 2.0


class OwnerTable(Protocol):
    """Who owns a bucket (``dispatcher.ownership.interface.Ownership`` is one)."""

    @property
    def owner_id(self) -> str: ...

    def owner(self, bucket: int) -> Owner | None: ...


@final
class SoleOwner:
    """The owner table of a daemon without ``[cluster]``: it owns every bucket."""

    def __init__(self, owner_id: str, address: Callable[[], str]) -> None:
        self._owner_id = owner_id
        self._address = address  # known once the front door listens

    @property
    def owner_id(self) -> str:
        return self._owner_id

    def owner(self, bucket: int) -> Owner | None:
        return Owner(self._owner_id, self._address(), 0)


class DaemonStatus(msgspec.Struct, kw_only=True, frozen=True):
    owner_id: str
    address: str
    buckets: list[int]  # the buckets it owns, as the ownership sees it now
    here: bool  # the daemon that answered this view
    reachable: bool
    error: str | None = None
    status: Status | None = None  # its own /admin/v1/status


class ClusterStatus(msgspec.Struct, kw_only=True, frozen=True):
    buckets: int
    unowned: list[int]  # no owner now: creates for them answer 503 + Retry-After
    daemons: list[DaemonStatus]
    numbers: int  # numbers running on the reachable daemons
    store_queued: int  # writes waiting for a commit on the reachable daemons


AskStatus = Callable[[str], Awaitable[Status]]
"""``await ask(address)``: that daemon's ``/admin/v1/status`` (raises if it cannot be had)."""


@final
class ClusterView:
    def __init__(
        self, *, count: int, owners: OwnerTable, local: Callable[[], Status], ask: AskStatus
    ) -> None:
        self._count = count
        self._owners = owners
        self._local = local
        self._ask = ask

    async def status(self, timeout: float = ASK_TIMEOUT) -> ClusterStatus:
        me = self._owners.owner_id
        held: dict[str, tuple[Owner, list[int]]] = {}
        unowned: list[int] = []
        for bucket in range(self._count):
            owner = self._owners.owner(bucket)
            if owner is None:
                unowned.append(bucket)
            else:
                held.setdefault(owner.owner_id, (owner, []))[1].append(bucket)
        daemons: dict[str, DaemonStatus] = {}
        if me not in held:  # a daemon that owns nothing right now still answers for itself
            daemons[me] = _status(me, "", [], here=True, status=self._local())

        async def ask(owner: Owner, buckets: list[int]) -> None:
            if owner.owner_id == me:
                daemons[me] = _status(me, owner.address, buckets, here=True, status=self._local())
                return
            try:
                with trio.fail_after(timeout):
                    found = await self._ask(owner.address)
            except Exception as exc:  # any failure of one peer is reported, the others still answer
                log.warning(
                    "cluster.status_unreachable", owner=owner.owner_id, address=owner.address, error=repr(exc)
                )
                daemons[owner.owner_id] = _status(
                    owner.owner_id, owner.address, buckets, here=False, error=_reason(exc)
                )
                return
            daemons[owner.owner_id] = _status(
                owner.owner_id, owner.address, buckets, here=False, status=found
            )

        async with trio.open_nursery() as nursery:
            for owner, buckets in held.values():
                nursery.start_soon(ask, owner, buckets)
        ordered = sorted(
            daemons.values(), key=lambda d: (not d.here, d.buckets[:1] or [self._count], d.owner_id)
        )
        return ClusterStatus(
            buckets=self._count,
            unowned=unowned,
            daemons=ordered,
            numbers=sum(len(d.status.numbers) for d in ordered if d.status is not None),
            store_queued=sum(d.status.store_queued for d in ordered if d.status is not None),
        )


def _status(
    owner_id: str,
    address: str,
    buckets: Sequence[int],
    *,
    here: bool,
    status: Status | None = None,
    error: str | None = None,
) -> DaemonStatus:
    return DaemonStatus(
        owner_id=owner_id,
        address=address,
        buckets=list(buckets),
        here=here,
        reachable=status is not None,
        error=error,
        status=status,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
