"""What the actor needs from a WhatsApp API flavour (On-Premises v1, Cloud/Graph).

The actor is channel-agnostic: a ``Channel`` turns a stored message into the
request for that API and classifies the answer; ``Credentials`` supplies the
Authorization header and renews it. Everything above (outbox, pacing, retries,
statuses) is shared.
"""

from __future__ import annotations

from typing import Protocol

import trio

from actors.outcome import Outcome
from actors.transport import Response
from dispatcher.models import MessageRecord


class Channel(Protocol):
    name: str

    def encode(self, record: MessageRecord, part: int = 0) -> tuple[bytes, bytes]:
        """``(target, body)`` of the send request for channel message ``part`` of ``record``
        (see ``dispatcher.parts``: segments, media items, or the template)."""
        ...

    def classify(self, resp: Response) -> Outcome:
        """What a send answer means: Sent, Retry, Reauth or Failed (with a Twilio code)."""
        ...

    def twilio_code(self, code: int) -> int:
        """The Twilio error code for one of this API's error codes."""
        ...


class Credentials(Protocol):
    @property
    def token(self) -> str | None:
        """The current token (compared by ``refresh`` to detect a stale 401)."""
        ...

    def auth_header(self) -> bytes: ...

    async def wait_ready(self) -> None: ...

    async def refresh(self, stale: str | None) -> None:
        """Renew unless the token already changed from ``stale``."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the credentials fresh until cancelled."""
        ...
