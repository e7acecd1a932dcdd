"""Hand-off to the actors: what intake, the scheduler and the webhooks tell a number's actor.

The outbox in LMDB is the truth; a hand-off only wakes the number's actor so it
need not find the entry on its own. A number without a running actor (removed,
stopped) is skipped: its outbox waits for the next actor, which recovers it.
"""

from __future__ import annotations

from typing import final

from actors.number import NumberActor
from actors.supervisor import Supervisor
from dispatcher.core.models import MessageRecord


@final
class Handoff:
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def actor(self, number: str) -> NumberActor | None:
        """The number's actor, if it has one (running or not)."""
        return self._supervisor.actor(number)

    def running(self, number: str) -> bool:
        return self._supervisor.states().get(number) == "running"

    def notify(self, number: str, seq: int, record: MessageRecord, part: int = 0) -> None:
        """Outbox entry ``seq`` (part ``part`` of ``record``) was committed for ``number``."""
        actor = self._supervisor.actor(number)
        if actor is not None:
            actor.notify(seq, record, part)

    def notify_part(self, seq: int, record: MessageRecord, part: int) -> None:
        """``notify`` for an outbound message: its sender's actor."""
        self.notify(record.from_number, seq, record, part)

    def note_status(self, number: str, record: MessageRecord) -> None:
        """A webhook moved the status of one of ``number``'s messages (its actor keeps statistics)."""
        actor = self._supervisor.actor(number)
        if actor is not None:
            actor.note_status(record.status, record.error_code)
