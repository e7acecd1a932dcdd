"""The outcome of one send attempt, and what a transport failure means.

Channels map their answers to these (``Channel.classify``); the actor acts on
them. Kept pure so every branch is tested without sockets.
"""

from __future__ import annotations

from typing import Final

import attrs

from actors.transport import ConnectError, Response, TransportError

GENERIC_FAILURE: Final = 30008  # Twilio's "Unknown error"
UNKNOWN_CODE_ATTEMPTS: Final = 3
"""An error code we do not know is retried (it may be transient), but only this many times."""


@attrs.frozen
class Sent:
    channel_id: str


@attrs.frozen
class Retry:
    """Try again later; ``after`` is the server's Retry-After, if it gave one.

    ``ambiguous``: the request may have been acted on (a retry may duplicate).
    ``cap``: attempts allowed for this kind of failure (below the number's
    ``max_attempts``); ``gives_up_with``: the Twilio (code, message) recorded
    when the attempts run out (default: 30008, gave up).
    """

    reason: str
    after: float | None = None
    rate_limited: bool = False
    ambiguous: bool = False
    cap: int | None = None
    gives_up_with: tuple[int, str] | None = None
    # Only this recipient is over its rate (Cloud 131056): back off it alone.
    pair_limited: bool = False


@attrs.frozen
class Reauth:
    """The credentials were refused: renew them, then retry."""


@attrs.frozen
class Halt:
    """The credentials are refused and cannot renew themselves (Cloud 190): the number is
    degraded until they change; the message stays queued."""

    reason: str


@attrs.frozen
class Failed:
    error_code: int
    error_message: str


Outcome = Sent | Retry | Reauth | Halt | Failed


def classify_error(exc: TransportError) -> Retry:
    """ConnectError: the request never left. Anything else may have been received (ambiguous)."""
    return Retry(type(exc).__name__, ambiguous=not isinstance(exc, ConnectError))


def retry_after(resp: Response) -> float | None:
    """The Retry-After header in seconds, if present and numeric."""
    value = resp.header(b"retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
