"""What the actor needs from a WhatsApp API flavour (On-Premises v1, Cloud/Graph).

The actor is channel-agnostic: a ``Channel`` turns a stored message into the
request for that API and classifies the answer; ``Credentials`` supplies the
Authorization header and renews it. Everything above (outbox, pacing, retries,
statuses) is shared.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from actors.outcome import Outcome
from actors.transport import Headers, Response
from dispatcher.core.models import MessageRecord

Encoded = tuple[bytes, bytes, bytes, Headers]
"""A send request: ``(method, target, body, headers)``, the headers without credentials."""


class Unsendable(Exception):
    """The channel has no request for this part of the message (e.g. media on an SMS channel):
    the message fails with ``code`` (a Twilio code), nothing is sent."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Channel(Protocol):
    name: str

    def encode(self, record: MessageRecord, part: int = 0) -> Encoded:
        """The send request for channel message ``part`` of ``record`` (see
        ``dispatcher.core.parts``: segments, media items, or the template), built once per message.

        Raises:
            Unsendable: this channel cannot carry that part.
        """
        ...

    def authorize(self, head: Headers, method: bytes, target: bytes, body: bytes, auth: bytes) -> Headers:
        """The headers of one attempt: ``head`` (from ``encode``) with the credentials in the
        channel's place (``auth`` is ``Credentials.auth_header()`` at the time of the attempt)."""
        ...

    media_hosts: tuple[str, ...]
    """Empty: ``media_target`` answers with the file itself (On-Prem). Otherwise it answers with
    the file's metadata (Cloud), whose URL ``media_location`` reads; the file is then fetched
    from there with the same token, if its host is the endpoint's own or ends with one of these."""

    def media_target(self, media_id: str) -> bytes:
        """The path that serves inbound media ``media_id``, built by ``dispatcher.core.urlpath``.

        Raises:
            IdError: ``media_id`` is not a media id.
        """
        ...

    def media_location(self, answer: Response) -> str:
        """The file's URL in a 200 answer to ``media_target`` (channels with ``media_hosts``).

        Raises:
            ValueError: the answer has no usable URL.
        """
        ...

    def classify(self, resp: Response) -> Outcome:
        """What a send answer means: Sent, Retry, Reauth or Failed (with a Twilio code)."""
        ...

    def twilio_code(self, code: int) -> int:
        """The Twilio error code for one of this API's error codes."""
        ...


@runtime_checkable
class Upkeep(Protocol):
    """Chores a part of the actor has at set times (token refresh, endpoint probes).

    The actor schedules ``due_at()`` on its host's shared ``Timers`` and calls
    ``upkeep()`` from a task of its own once due, so an idle actor keeps no task
    sleeping for them.
    """

    def due_at(self) -> float:
        """Trio time of the next chore (``math.inf``: none)."""
        ...

    async def upkeep(self) -> None:
        """Do what is due now (nothing if nothing is); expected failures are handled here and
        move ``due_at`` (e.g. a login retried later)."""
        ...


class Credentials(Upkeep, Protocol):
    @property
    def token(self) -> str | None:
        """The current token (compared by ``refresh`` to detect a stale 401)."""
        ...

    @property
    def ready(self) -> bool:
        """A usable token is there (``wait_ready`` would return at once)."""
        ...

    def auth_header(self) -> bytes: ...

    async def wait_ready(self) -> None: ...

    async def refresh(self, stale: str | None) -> None:
        """Renew unless the token already changed from ``stale``."""
        ...

    def restore(self) -> None:
        """Take persisted credentials if any are still good (no network: runs before serving)."""
        ...
