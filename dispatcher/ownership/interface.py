"""The Ownership interface the daemon runs, and the BucketHost it drives.

An Ownership keeps this process's share of the buckets: it claims free buckets up
to a fair share (``balance``), tells the host what it gained (with the bucket's
epoch, for the Store's fencing, and the gate its actors ask before each send) and
what it lost (the host drains the bucket's actors before the claim is let go), and
answers who owns any bucket (for forwarding a request to its owner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs
import trio

from actors.lease import SendLease


@attrs.frozen
class Owner:
    """Who owns a bucket: the owner's id, the address its front door takes forwarded requests
    on (``http://host:port``), the epoch of its claim, and its lane (``lane://host:port``, where
    forwarded requests go straight into its app; "" from a daemon without one)."""

    owner_id: str
    address: str
    epoch: int
    lane: str = ""

    @property
    def peer(self) -> str:
        """Where a request forwarded to this owner goes: its lane if it has one."""
        return self.lane or self.address


class BucketHost(Protocol):
    """What the daemon does when a bucket comes or goes."""

    async def gained(self, bucket: int, epoch: int, gate: SendLease) -> None:
        """``bucket`` is ours from ``epoch``: fence its Store and start its actors behind ``gate``."""
        ...

    async def lost(self, bucket: int) -> None:
        """``bucket`` is not ours any more (or is being let go): stop its actors and return once
        no send of theirs is in flight. Their outboxes stay in the bucket for the next owner."""
        ...

    def suspend(self, bucket: int) -> None:
        """Our claim on ``bucket`` may have lapsed (etcd without quorum): accept no write for it
        (creates get 503) until ``resume``; its actors already wait at their gate."""
        ...

    def resume(self, bucket: int) -> None:
        """The claim held after all (a keepalive succeeded): the bucket is ours again as before."""
        ...


class Ownership(Protocol):
    """One process's claims on buckets."""

    @property
    def owner_id(self) -> str: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and keep buckets until ``stop()``; ``started()`` after the first round of claims.
        Returns once every bucket was drained (``BucketHost.lost``) and let go."""
        ...

    def stop(self) -> None:
        """Shutting down: claim nothing more; ``run`` lets go of every bucket, so others take them at once."""
        ...

    def owner(self, bucket: int) -> Owner | None:
        """The bucket's owner as last seen (None: no owner now; a create for it gets 503)."""
        ...

    def owned(self) -> Mapping[int, int]:
        """The buckets this process owns now, and their epochs."""
        ...

    @property
    def live(self) -> int:
        """Processes taking part, this one included (as last counted)."""
        ...

    @property
    def healthy(self) -> bool:
        """The backend answers (etcd: the last keepalive succeeded; flock: always)."""
        ...

    def status(self) -> Mapping[str, object]:
        """For /metrics, status and the admin API: backend, health, live processes, fair share."""
        ...
