"""What Meta last told us about a Cloud number's standing, kept in LMDB.

Account webhooks (``webhooks.account``) and reads of the number's fields
(onboarding, ``doctor``, the start-up check) write it; the actor's limits are
built from it (``service.numbers``), so a tier raised at Meta stays raised
after a restart, and a number paused because Meta restricted it stays paused.

One record per number in the ``numbers`` DB under ``number NUL "watch"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from dispatcher.core.store import Store, WriteTxn, number_key

WATCH_KEY: Final = b"watch"

# The problems a number can have at Meta, as ``[watch] pause_on`` names them.
FLAGGED: Final = "flagged"  # quality flagged (legacy FLAGGED event; RED quality)
RESTRICTED: Final = "restricted"  # the WABA may not start conversations (ACCOUNT_RESTRICTION)
DISABLED: Final = "disabled"  # the WABA is disabled or deleted (DISABLED_UPDATE, ACCOUNT_DELETED)
PROBLEMS: Final = (FLAGGED, RESTRICTED, DISABLED)


class NumberWatch(msgspec.Struct, kw_only=True, frozen=True):
    """Meta's view of one number; None where Meta has not said."""

    quality: str | None = None  # GREEN | YELLOW | RED | UNKNOWN (quality_rating)
    messaging_tier: str | None = None  # TIER_250 ... TIER_UNLIMITED (or a number between tiers)
    throughput_level: str | None = None  # STANDARD | HIGH
    status: str | None = None  # CONNECTED, FLAGGED, RESTRICTED, ... (the number's ``status`` field)
    verified_name: str | None = None
    name_decision: str | None = None  # APPROVED | DEFERRED | PENDING | REJECTED (name review)
    flagged: bool = False
    restrictions: list[str] = []  # restriction types in force (RESTRICTED_BIZ_INITIATED_MESSAGING...)
    restricted_until: float | None = None  # wall time the last restriction expires
    disabled: bool = False
    last_event: str | None = None  # field:event of the last account webhook applied
    updated_at: float = 0.0  # wall time of the last change
    paused_by_watch: bool = False  # we paused the number because of a problem ([watch] pause_on)

    def problems(self, now: float) -> list[str]:
        """The problems in force at wall time ``now`` (a restriction past its expiry is over)."""
        found: list[str] = []
        if self.flagged:
            found.append(FLAGGED)
        if self.restrictions and (self.restricted_until is None or self.restricted_until > now):
            found.append(RESTRICTED)
        if self.disabled:
            found.append(DISABLED)
        return found


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(NumberWatch)
UNKNOWN: Final = NumberWatch()


def key(number: str) -> bytes:
    return number_key(number, WATCH_KEY)


def load(store: Store, number: str) -> NumberWatch:
    raw = store.get(b"numbers", key(number))
    return UNKNOWN if raw is None else _decoder.decode(raw)


def put(number: str, watch: NumberWatch) -> Callable[[WriteTxn], None]:
    """The write storing ``watch`` for ``number``."""
    k, value = key(number), _encoder.encode(watch)

    def write(txn: WriteTxn) -> None:
        txn.put(b"numbers", k, value)

    return write


__all__ = ["DISABLED", "FLAGGED", "PROBLEMS", "RESTRICTED", "NumberWatch", "load", "put"]
