"""InFlight: one number's durable marks of the sends under way, so at-most-once holds across crashes.

Under ``on_ambiguous = "fail"`` an answer lost at run time fails the message (30008)
instead of sending it again. A send cut off by its process's death (``kill -9``, a
host lost) or by its bucket passing to another daemon loses its answer just as
surely, but leaves nobody to decide: the next owner of the outbox only sees an entry
still queued. So the actor of such a number commits a mark (``dispatcher.core.
sendmarks``) before each request goes on the wire; the commit recording its outcome
clears it (``ledger``'s ``started=True``), and so does a write after an attempt that
certainly did not reach the API and will be retried (``unsent``). Marks of concurrent
sends share group commits, as the number's outcome writes do.

At recovery (start, a restart after a crash, a bucket gained from another owner),
a mark whose entry is still in the outbox and whose outcome is not held in
``Unrecorded`` is a send whose outcome nobody knows: it is failed exactly as an
ambiguous send at run time (same code and message, status callback, counted and
logged ``send.ambiguous`` with its sid), its failure held like any outcome until
committed, so it is never sent again. Under ``retry`` it is logged and counted, and
sent again. Marks whose entry is gone are cleared.

Numbers under ``retry`` write no marks: nothing is added to their sends.
"""

from __future__ import annotations

from typing import final

import structlog

from actors.outcome import Halt, Outcome, Reauth, Retry
from actors.policy import DeliveryPolicy
from actors.recording import OutcomeRecorder
from actors.statistics import SendCounts
from actors.unrecorded import Unrecorded
from dispatcher.core import ledger, sendmarks
from dispatcher.core.clock import WallClock
from dispatcher.core.models import entry_decoder
from dispatcher.core.store import Store, seq_key

log = structlog.get_logger()

INTERRUPTED = "interrupted"  # send.ambiguous's reason for a send found in flight at recovery


def unsent(outcome: Outcome) -> bool:
    """The attempt certainly did not reach the API (or was refused there), and the message stays
    queued for another: a connection refused, an error answer that is not final, credentials
    refused. Its mark is cleared before the wait."""
    if isinstance(outcome, Retry):
        return not outcome.ambiguous
    return isinstance(outcome, (Reauth, Halt))


@final
class InFlight:
    """The marks of one number's sends; ``marking`` (the policy is ``fail``) says whether its
    sends write them."""

    __slots__ = (
        "_counts",
        "_leftover",
        "_number",
        "_policy",
        "_recorder",
        "_store",
        "_unrecorded",
        "_wall",
        "marking",
    )

    def __init__(
        self,
        *,
        number: str,
        store: Store,
        policy: DeliveryPolicy,
        recorder: OutcomeRecorder,
        unrecorded: Unrecorded,
        wall: WallClock,
        counts: SendCounts,
    ) -> None:
        self._number = number
        self._store = store
        self._policy = policy
        self._recorder = recorder
        self._unrecorded = unrecorded
        self._wall = wall
        self._counts = counts
        self.marking = policy.at_most_once
        self._leftover: tuple[int, ...] = ()  # marks to clear once the actor dispatches

    def recover(self) -> int:
        """Read the marks left by the number's last sender (inline, before the actor serves):
        fail (or, under ``retry``, release) the sends they name. Returns how many were in flight."""
        marks = sendmarks.read(self._store, self._number)
        if not marks:
            return 0
        leftover: list[int] = []
        interrupted = 0
        for mark in marks:
            if mark.seq in self._unrecorded:
                continue  # its answer came and is being committed: that commit clears the mark
            raw = self._store.get(b"outbox", seq_key(self._number, mark.seq))
            if raw is None:
                leftover.append(mark.seq)  # its entry left the outbox (canceled, expired, deleted)
                continue
            interrupted += 1
            self._interrupted(mark, entry_decoder.decode(raw).sid, leftover)
        self._leftover = tuple(leftover)
        return interrupted

    def _interrupted(self, mark: sendmarks.Mark, sid: str, leftover: list[int]) -> None:
        counts = self._counts
        counts.ambiguous += 1
        log.warning(
            "send.ambiguous",
            number=self._number,
            sid=sid,
            reason=INTERRUPTED,
            policy=self._policy.on_ambiguous,
            in_flight_since=mark.since,
        )
        give_up = self._policy.after_interrupted()
        if give_up is None:
            leftover.append(mark.seq)  # sent again: the mark goes first
            return
        code, message = give_up.code, give_up.message
        log.warning(
            "send.failed", number=self._number, sid=sid, status="failed", error_code=code, error=message
        )
        write = ledger.mark_failed(self._number, mark.seq, sid, code, message, self._wall.now(), started=True)
        # Held like an answer not yet committed: the recorder commits it when the actor
        # dispatches, and the send loop waits for that instead of sending the entry.
        self._unrecorded.begin(mark.seq, write)
        self._unrecorded.stall(mark.seq, sid)
        counts.failed += 1
        counts.count_failure(code)

    async def clear_leftover(self) -> None:
        """Clear the marks ``recover`` found without a send to fail (best effort: storage that
        refuses the write fails the number's storage, and the next recovery finds them again)."""
        if self._leftover:
            seqs, self._leftover = self._leftover, ()
            await self._recorder.try_write(sendmarks.unmark(self._number, seqs))

    async def mark(self, seq: int) -> bool:
        """Commit entry ``seq``'s mark before its request goes out; False if storage refused it
        (the number then fails storage: no send starts until it records again)."""
        return await self._recorder.try_write(sendmarks.mark(self._number, seq, self._wall.now()))

    async def unmark(self, seq: int) -> None:
        """Entry ``seq``'s attempt certainly did not send it: clear its mark before the wait, so
        a stop meanwhile leaves a message that is sent later, not failed as ambiguous."""
        await self._recorder.try_write(sendmarks.unmark(self._number, (seq,)))


__all__ = ["INTERRUPTED", "InFlight", "unsent"]
