"""Unrecorded: the outcomes of a number's sends that storage has not committed yet.

A send whose answer was received must never go out again because we failed to
write that answer down. The actor puts each outcome here before it writes it and
takes it out once committed, so whatever interrupts the write (a full map, a full
disk, a crash of the actor, a live reload swapping the actor) leaves it here, and
the number's next run commits it instead of sending the message again.

It outlives the actor: the supervisor restarts the same actor object, and a live
reload gives the successor the holder of its predecessor (``Fleet`` keeps one per
number). Only the process dying loses it: a ``kill -9`` between an answer and its
commit leaves the outbox entry, and that send is retried (at-least-once), or, for a
number under ``on_ambiguous = "fail"``, failed as ambiguous (``actors.inflight``).

Recording an outcome twice is harmless: the ledger's outcome writes do nothing
once the outbox entry is gone, so a write that committed just before its actor was
interrupted is not applied again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import final

import attrs
import trio

from dispatcher.core.store import WriteTxn

OutcomeWrite = Callable[[WriteTxn], object]


@attrs.define(eq=False, slots=True)
class Outcome:
    """What a send of outbox entry ``seq`` came to, as the write that records it."""

    seq: int
    sid: str
    write: OutcomeWrite
    writing: bool = False  # a task is committing it now (the retrier)
    committed: trio.Event | None = None  # made for whoever waits for the commit


@final
class Unrecorded:
    """One number's outcomes between answer and commit, by outbox seq.

    While its first commit is under way an outcome is kept as its bare write (no
    object per send on the hot path); one whose first commit failed or was
    interrupted becomes an ``Outcome`` (``stall``), which the retrier takes.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[int, Outcome | OutcomeWrite] = {}

    def begin(self, seq: int, write: OutcomeWrite) -> None:
        """Keep the outcome of entry ``seq``: its first commit is under way."""
        self._held[seq] = write

    def stall(self, seq: int, sid: str) -> Outcome:
        """The first commit of ``seq`` failed or was interrupted: from now on the retrier's."""
        entry = self._held[seq]
        if isinstance(entry, Outcome):
            return entry
        outcome = self._held[seq] = Outcome(seq, sid, entry)
        return outcome

    def get(self, seq: int) -> Outcome | None:
        entry = self._held.get(seq)
        if entry is None or isinstance(entry, Outcome):
            return entry
        return self.stall(seq, "")  # left by a run that never got to stall it

    def recorded(self, seq: int) -> None:
        """The outcome of ``seq`` is committed: forget it and wake whoever waits for it."""
        entry = self._held.pop(seq, None)
        if isinstance(entry, Outcome) and entry.committed is not None:
            entry.committed.set()

    async def wait_recorded(self, outcome: Outcome) -> None:
        if self._held.get(outcome.seq) is not outcome:
            return
        if outcome.committed is None:
            outcome.committed = trio.Event()
        await outcome.committed.wait()

    def idle(self) -> list[Outcome]:
        """The stalled outcomes nobody is committing now, in outbox order (what the retrier takes)."""
        return sorted(
            (o for o in self._held.values() if isinstance(o, Outcome) and not o.writing),
            key=lambda o: o.seq,
        )

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, seq: int) -> bool:
        """Whether an outcome of entry ``seq`` is held (without making it the retrier's)."""
        return seq in self._held

    def __bool__(self) -> bool:
        return bool(self._held)

    def __iter__(self) -> Iterator[Outcome]:
        """Every held outcome in outbox order (one whose first commit is under way has no sid yet)."""
        for seq in sorted(self._held):
            entry = self._held[seq]
            yield entry if isinstance(entry, Outcome) else Outcome(seq, "", entry)


__all__ = ["Outcome", "OutcomeWrite", "Unrecorded"]
