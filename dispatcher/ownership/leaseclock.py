"""The arithmetic of sending under a lease that the process cannot see lapse.

A process holds an etcd lease of ``ttl`` seconds and renews it with keepalives.
etcd counts the ttl from when its leader handles a keepalive, which is after we
sent it: so the lease lives at least until ``sent_at + ttl``, where ``sent_at`` is
when the last *successful* keepalive was sent (not answered: an answer can take
long, and counting from it would overstate the lease by that long). The process
stops starting sends ``margin`` seconds before that bound (for clock rate drift
between this host and etcd's leader), and earlier still by ``send_timeout``, the
longest a send can last, so that no send starts that could outlive the lease:

    send_until = sent_at + ttl - margin - send_timeout

A bucket newly claimed opens only ``grace`` seconds after its claim (``BucketGate``):
its previous owner stopped starting sends by its own lease's bound, and grace
covers a request of its that was still on its way when that bound passed.

Time is trio's clock throughout, so MockClock tests drive all of it.
"""

from __future__ import annotations

import math
from typing import final

import attrs
import trio


@attrs.frozen
class LeaseTiming:
    """``ttl``: the lease's seconds; ``margin``: safety for clock drift; ``send_timeout``: the
    longest one send may last; ``grace``: a new owner's wait before its first send."""

    ttl: float
    margin: float
    send_timeout: float
    grace: float

    def __attrs_post_init__(self) -> None:
        if self.ttl <= 0 or self.margin < 0 or self.send_timeout < 0 or self.grace < 0:
            raise ValueError("ttl must be positive, margin, send_timeout and grace not negative")
        if self.margin + self.send_timeout >= self.ttl:
            raise ValueError(
                f"ttl ({self.ttl:g} s) must exceed margin + send_timeout "
                f"({self.margin:g} + {self.send_timeout:g} s): no send could ever start"
            )

    @property
    def send_window(self) -> float:
        """Seconds after a keepalive's send during which sends may start."""
        return self.ttl - self.margin - self.send_timeout

    @property
    def keepalive_every(self) -> float:
        """Renew three times a send window: two keepalives may fail before sends stop."""
        return self.send_window / 3


@final
class LeaseClock:
    """The process's lease as seen from here: until when sends may start, from the last
    keepalive that succeeded. Closed until the first renewal."""

    def __init__(self, timing: LeaseTiming) -> None:
        self.timing = timing
        self.until = -math.inf  # sends may start before this trio time
        self.renewed_at = -math.inf  # when the last successful keepalive (or the grant) was sent
        self._changed = trio.Event()

    def renewed(self, sent_at: float, ttl: float) -> None:
        """A keepalive sent at ``sent_at`` succeeded; etcd granted ``ttl`` seconds from its receipt."""
        timing = self.timing
        until = sent_at + ttl - timing.margin - timing.send_timeout
        if until > self.until:
            self.until = until
            self.renewed_at = sent_at
            self._changed.set()
            self._changed = trio.Event()

    def lapsed(self) -> None:
        """The lease is gone (etcd said so): close at once."""
        self.until = -math.inf
        self._changed.set()
        self._changed = trio.Event()

    def lapses_by(self) -> float:
        """The latest the lease can still live, as far as we know (``sent_at + ttl``)."""
        return self.renewed_at + self.timing.ttl

    def valid(self, now: float) -> bool:
        return now < self.until

    async def wait_renewed(self) -> None:
        await self._changed.wait()


@final
class BucketGate:
    """One bucket's SendLease: shut during its grace, then open as long as the process's lease."""

    def __init__(self, lease: LeaseClock, *, opens_at: float) -> None:
        self._lease = lease
        self.opens_at = opens_at

    def send_until(self) -> float:
        lease = self._lease
        if trio.current_time() < self.opens_at:
            return -math.inf
        return lease.until

    async def wait_open(self) -> None:
        while True:
            now = trio.current_time()
            if now < self.opens_at:
                await trio.sleep_until(self.opens_at)
            elif self._lease.valid(now):
                return
            else:
                await self._lease.wait_renewed()
