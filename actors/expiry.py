"""ValiditySweep: a number's messages whose ValidityPeriod passed fail with 30036, loaded or not.

A message with a ValidityPeriod is indexed by when it expires (``expiry`` in
``dispatcher.core.outbox``, written with its outbox entry). With a backlog
bigger than memory most messages are never loaded before they expire, so
waiting for each to reach the send loop would fail them hours late; instead
this chore (an ``Upkeep`` on the host's shared timers) wakes at the earliest
expiry of the number, fails what is due in one write, and sets itself for the
next one. Durable: the index is the truth, so a restart finds what is due.

A message whose send has started is left to its send, which checks the period
before every attempt; the chore looks again a second later. The send loop's own
check stays too (a message loaded before it expired, about to go).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, final

import structlog
import trio

from actors.holds import SendHolds
from dispatcher.core import ledger, outbox
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store, StoreError, WriteTxn, number_key

log = structlog.get_logger()

SWEEP_LIMIT: Final = 1000  # messages failed in one write, at most
BUSY_RETRY: Final = 1.0  # seconds before looking again at a message whose send had started
STORAGE_RETRY: Final = 5.0  # seconds before sweeping again after storage refused the write


@final
class ValiditySweep:
    """The expiry chore of one number."""

    __slots__ = ("_due", "_holds", "_number", "_on_expired", "_prefix", "_store", "_wall")

    def __init__(
        self,
        *,
        number: str,
        store: Store,
        wall: WallClock,
        holds: SendHolds,
        on_expired: Callable[[list[MessageRecord]], None],
    ) -> None:
        """``on_expired``: called with the records failed by a sweep (the actor counts them)."""
        self._number = number
        self._store = store
        self._wall = wall
        self._holds = holds
        self._on_expired = on_expired
        self._prefix = number_key(number)
        self._due = math.inf  # wall time of the next sweep (math.inf: nothing to expire)

    def load(self) -> None:
        """Read the earliest expiry from the index (at start)."""
        self._due = self._earliest()

    def noted(self, valid_until: float) -> bool:
        """A message expiring at ``valid_until`` (wall time) was accepted: True if that is
        earlier than the next sweep (the caller reschedules)."""
        if valid_until < self._due:
            self._due = valid_until
            return True
        return False

    def due_at(self) -> float:
        if self._due == math.inf:
            return math.inf
        return trio.current_time() + max(0.0, self._due - self._wall.now())

    async def upkeep(self) -> None:
        now = self._wall.now()
        due: list[tuple[bytes, str]] = []
        busy = False
        for key, raw_sid in self._store.scan(outbox.EXPIRY, self._prefix):
            valid_until, _ = outbox.parse_expiry(self._number, key)
            if valid_until > now or len(due) >= SWEEP_LIMIT:
                break
            sid = raw_sid.decode()
            if self._holds.try_hold(sid):
                due.append((key, sid))
            else:
                busy = True  # its send started: the send checks the period itself
        if due:
            try:
                expired = await self._store.write(_expire_all(self._number, [key for key, _ in due], now))
            except StoreError as exc:
                log.warning("expiry.storage_failed", error=str(exc))
                self._due = self._wall.now() + STORAGE_RETRY
                return
            finally:
                for _, held in due:
                    self._holds.release(held)
            if expired:
                log.info("messages.expired", count=len(expired))
                self._on_expired(expired)
        self._due = self._earliest()
        if busy or len(due) >= SWEEP_LIMIT:
            self._due = min(self._due, self._wall.now() + (BUSY_RETRY if busy else 0.0))

    def _earliest(self) -> float:
        first = next(self._store.scan(outbox.EXPIRY, self._prefix), None)
        return math.inf if first is None else outbox.parse_expiry(self._number, first[0])[0]


def _expire_all(number: str, keys: list[bytes], now: float) -> Callable[[WriteTxn], list[MessageRecord]]:
    writes = [ledger.expire(number, key, now) for key in keys]

    def fn(txn: WriteTxn) -> list[MessageRecord]:
        return [record for write in writes if (record := write(txn)) is not None]

    return fn


__all__ = ["ValiditySweep"]
