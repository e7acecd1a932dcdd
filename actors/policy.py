"""DeliveryPolicy: what the send loop does when an attempt did not end in ``Sent``.

Pure decisions, no I/O and no clock: from a ``Retry`` (``actors.outcome``) and the
attempts made so far to giving up with a Twilio error, or backing off for a time.
The actor carries them out (records the failure, sleeps without its send slot);
counting and logging stay with it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, Literal

import attrs

from actors.outcome import Retry
from dispatcher.core.ledger import EXPIRED
from dispatcher.core.models import MessageRecord

MAX_ATTEMPTS: Final = 12
GAVE_UP: Final = (30008, "Unknown error: gave up after repeated transient failures")
AMBIGUOUS_FAILED: Final = (
    30008,
    "Unknown error: the send may or may not have reached WhatsApp; not retried (on_ambiguous = fail)",
)
PAIR_GAVE_UP: Final = (63018, "Rate limit exceeded: the recipient's pair rate limit (131056) kept refusing")
AmbiguousPolicy = Literal["retry", "fail"]


@attrs.frozen
class GiveUp:
    """Record the message as failed with this Twilio error."""

    code: int
    message: str


@attrs.frozen
class BackOff:
    """Send the message again after ``delay`` seconds."""

    delay: float


@attrs.frozen(kw_only=True)
class DeliveryPolicy:
    """A number's retry rules. ``on_ambiguous``: a send that may have reached WhatsApp (answer
    lost) is sent again (``retry``: at-least-once, the default) or failed (``fail``: at-most-once).
    ``jitter(low, high)`` draws a backoff (``random.uniform``; tests may pin it)."""

    max_attempts: int = MAX_ATTEMPTS
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    on_ambiguous: AmbiguousPolicy = "retry"
    jitter: Callable[[float, float], float] = random.uniform

    def after_retry(self, retry: Retry, attempts: int) -> GiveUp | BackOff:
        """After ``attempts`` attempts, the last answered ``retry``: the server's own delay if it
        gave one, else exponential backoff with full jitter; give up once the attempts allowed
        for this kind of failure are spent, or at once for an ambiguous one under ``fail``."""
        if retry.ambiguous and self.on_ambiguous == "fail":
            return GiveUp(*AMBIGUOUS_FAILED)
        cap = self.max_attempts if retry.cap is None else min(retry.cap, self.max_attempts)
        if attempts >= cap:
            return GiveUp(*(retry.gives_up_with or GAVE_UP))
        return BackOff(retry.after if retry.after is not None else self.backoff(attempts))

    @property
    def at_most_once(self) -> bool:
        """Sends are marked durably before they go out (``dispatcher.core.sendmarks``), so one
        interrupted by its process's death or a bucket's takeover is never sent again."""
        return self.on_ambiguous == "fail"

    def after_interrupted(self) -> GiveUp | None:
        """A send found in flight at recovery (its sender stopped before its outcome was
        recorded): give up as for any ambiguous send under ``fail``, or (None) send it again."""
        return GiveUp(*AMBIGUOUS_FAILED) if self.at_most_once else None

    def after_pair_refusal(self, attempts: int) -> GiveUp | None:
        """Meta's 131056 after ``attempts`` attempts: give up, or (None) wait out the pair rate."""
        return GiveUp(*PAIR_GAVE_UP) if attempts >= self.max_attempts else None

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, full jitter, capped."""
        return self.jitter(0.0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))


DEFAULT_POLICY: Final = DeliveryPolicy()


def sendable(record: MessageRecord, part: int) -> bool:
    """Still to be sent: queued; or a later part of a message whose earlier parts went out."""
    if record.status in ("queued", "accepted", "sending"):
        return True
    return part > 0 and record.status in ("sent", "delivered", "read")


__all__ = [
    "AMBIGUOUS_FAILED",
    "DEFAULT_POLICY",
    "EXPIRED",
    "GAVE_UP",
    "MAX_ATTEMPTS",
    "PAIR_GAVE_UP",
    "AmbiguousPolicy",
    "BackOff",
    "DeliveryPolicy",
    "GiveUp",
    "sendable",
]
