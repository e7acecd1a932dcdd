"""What became of recent callback attempts: a bounded in-memory journal for operators.

The durable queue holds what is still to be sent; once an entry is answered it
is gone. The journal keeps the last ``size`` attempts (answered, failed, given
up) with their answers, so the console can show a message's callbacks and a
destination's recent failures. One deque append per attempt, on the callback
sender's cold path; nothing is kept across restarts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Final, Literal, final

import attrs

from dispatcher.core.callbacks import CallbackEntry, origin

DEFAULT_SIZE: Final = 10_000

Outcome = Literal["delivered", "retry", "rejected", "refused", "gave_up"]


@attrs.frozen
class Attempt:
    """One POST (or the decision not to make it) to a customer URL."""

    sid: str
    kind: str  # "status" | "inbound"
    url: str
    status_param: str  # the MessageStatus the callback reports ("" for inbound)
    at: float  # wall clock, Unix seconds
    outcome: Outcome
    http_status: int | None  # the customer's answer, when there was one
    error: str | None  # why there was no (good) answer


@final
class CallbackJournal:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._attempts: deque[Attempt] = deque(maxlen=size)
        self.gave_up_by_origin: dict[str, int] = {}

    def note(
        self,
        entry: CallbackEntry,
        at: float,
        outcome: Outcome,
        *,
        http_status: int | None = None,
        error: str | None = None,
    ) -> None:
        status = next((value for name, value in entry.params if name == "MessageStatus"), "")
        self._attempts.append(
            Attempt(entry.sid, entry.kind, entry.url, status, at, outcome, http_status, error)
        )
        if outcome == "gave_up":
            key = origin(entry.url)
            self.gave_up_by_origin[key] = self.gave_up_by_origin.get(key, 0) + 1

    def for_message(self, sid: str) -> list[Attempt]:
        """The message's attempts still in the journal, oldest first."""
        return [a for a in self._attempts if a.sid == sid]

    def newest(self) -> Iterator[Attempt]:
        return reversed(self._attempts)
