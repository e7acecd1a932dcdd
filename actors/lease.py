"""SendLease: until when this process may start a send for a number.

One actor at a time sends for a number; across processes and hosts that is decided
by who owns the number's bucket (``dispatcher.ownership``). An owner under a lease
(etcd) may keep the bucket only while its lease lives, and it cannot know that the
lease still lives, only when it last renewed it: so it may start a send only until
an instant early enough that the send is over before the lease could lapse. The
actor asks ``send_until()`` before every send (one call and a comparison on the hot
path), and when that instant has passed it waits on ``wait_open()``; the owner
stops the actor if the bucket is lost meanwhile.

The default (one daemon, or a ``flock`` owner whose lock the kernel holds for as
long as the process lives) is always open.
"""

from __future__ import annotations

import math
from typing import Final, Protocol, final

import trio


class SendLease(Protocol):
    """The send gate an actor checks before each send."""

    def send_until(self) -> float:
        """Trio time before which a send may start (``inf``: always; in the past: not now)."""
        ...

    async def wait_open(self) -> None:
        """Return once ``send_until()`` lies in the future again (the lease was renewed)."""
        ...


@final
class AlwaysOpen:
    """The gate of a process that owns its numbers for as long as it lives."""

    def send_until(self) -> float:
        return math.inf

    async def wait_open(self) -> None:
        await trio.lowlevel.checkpoint()


ALWAYS_OPEN: Final = AlwaysOpen()
