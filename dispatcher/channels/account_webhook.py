"""Meta's account-level webhook fields -> typed account events.

Four fields of the Cloud webhook envelope tell us about the number and its
WhatsApp Business Account rather than about messages:

- ``phone_number_quality_update``: the number's throughput level
  (``THROUGHPUT_UPGRADE``), its portfolio's messaging limit
  (``max_daily_conversations_per_business``), and in older payloads
  ``FLAGGED`` / ``UNFLAGGED`` / ``UPGRADE`` / ``DOWNGRADE`` with
  ``current_limit`` as the messaging tier;
- ``phone_number_name_update``: the display name's review (``decision``);
- ``account_update``: the WABA restricted, disabled, reinstated, deleted...;
- ``business_capability_update``: the portfolio's messaging limit, as a tier
  name (``TIER_2K``) or, in Meta's own example, an integer (``2000``; ``-1``
  is unlimited; older ``max_daily_conversation_per_phone``).

Shapes: Meta's webhook references (``_source`` in tests/corpus) and pywa's
``types/account_update.py``. Every value Meta may add later (an unknown event,
tier or restriction type) decodes: unknown names are kept as they came and only
known ones change limits. A value that is not an object raises ``ValueError``.
"""

from __future__ import annotations

from typing import Final

import msgspec

QUALITY_FIELD: Final = "phone_number_quality_update"
NAME_FIELD: Final = "phone_number_name_update"
ACCOUNT_FIELD: Final = "account_update"
CAPABILITY_FIELD: Final = "business_capability_update"
FIELDS: Final = (QUALITY_FIELD, NAME_FIELD, ACCOUNT_FIELD, CAPABILITY_FIELD)

# Meta's messaging limit tiers: unique business-initiated recipients per rolling 24 h.
# ``TIER_1K`` is the name ``TIER_2K`` had before 2025; None is unlimited.
TIERS: Final[dict[str, int | None]] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_1K": 1_000,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": None,
}
# ``max_daily_conversation(s)_per_...`` as an integer: -1 is unlimited.
_UNLIMITED_INT: Final = -1


def tier_name(limit: int | None) -> str:
    """A limit as Meta names its tier (``TIER_2K``); a limit between tiers as its number."""
    for name, value in TIERS.items():
        if value == limit and name != "TIER_1K":
            return name
    return str(limit)


class QualityUpdate(msgspec.Struct, frozen=True, kw_only=True):
    display_phone_number: str
    event: str = ""
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversations_per_business: str | int | None = None


class NameUpdate(msgspec.Struct, frozen=True, kw_only=True):
    display_phone_number: str
    decision: str = ""
    requested_verified_name: str = ""
    rejection_reason: str | None = None


class Restriction(msgspec.Struct, frozen=True, kw_only=True):
    restriction_type: str
    expiration: int | None = None
    remediation: str | None = None


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    violation_type: str = ""


class Ban(msgspec.Struct, frozen=True, kw_only=True):
    waba_ban_state: str = ""
    waba_ban_date: str = ""


class AccountUpdate(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    restriction_info: list[Restriction] = []
    violation_info: Violation | None = None
    ban_info: Ban | None = None


class CapabilityUpdate(msgspec.Struct, frozen=True, kw_only=True):
    max_daily_conversations_per_business: str | int | None = None
    max_daily_conversation_per_phone: int | None = None
    max_phone_numbers_per_business: int | None = None
    max_phone_numbers_per_waba: int | None = None


AccountEvent = QualityUpdate | NameUpdate | AccountUpdate | CapabilityUpdate

_DECODERS: Final[dict[str, msgspec.json.Decoder[AccountEvent]]] = {
    QUALITY_FIELD: msgspec.json.Decoder(QualityUpdate),
    NAME_FIELD: msgspec.json.Decoder(NameUpdate),
    ACCOUNT_FIELD: msgspec.json.Decoder(AccountUpdate),
    CAPABILITY_FIELD: msgspec.json.Decoder(CapabilityUpdate),
}


def decode(field: str, value: bytes) -> AccountEvent:
    """The change ``value`` (raw JSON) of account field ``field``.

    Raises:
        KeyError: ``field`` is not one of ``FIELDS``.
        ValueError: the value is not the field's shape (msgspec's message, naming the key).
    """
    try:
        return _DECODERS[field].decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc


_UNSET: Final = object()


def _limit(value: str | int | None) -> int | object | None:
    """A messaging limit as Meta writes it -> recipients (None: unlimited), or ``_UNSET``."""
    if isinstance(value, int):
        if value == _UNLIMITED_INT:
            return None
        return value if value > 0 else _UNSET
    if value is None or value not in TIERS:
        return _UNSET  # TIER_NOT_SET, or a tier Meta adds later: nothing we can enforce
    return TIERS[value]


def messaging_limit(event: AccountEvent) -> tuple[bool, int | None]:
    """``(changed, limit)``: the messaging limit the event announces (None: unlimited), if any.

    The portfolio's ``max_daily_conversations_per_business`` wins; older quality events carry
    the tier in ``current_limit``, except a throughput event, whose ``TIER_UNLIMITED`` is the
    throughput level (Meta's reference), not a messaging limit.
    """
    found: int | object | None = _UNSET
    if isinstance(event, QualityUpdate):
        found = _limit(event.max_daily_conversations_per_business)
        if found is _UNSET and event.event not in THROUGHPUT_EVENTS:
            found = _limit(event.current_limit)
    elif isinstance(event, CapabilityUpdate):
        found = _limit(event.max_daily_conversations_per_business)
        if found is _UNSET:
            found = _limit(event.max_daily_conversation_per_phone)
    if found is _UNSET:
        return False, None
    assert found is None or isinstance(found, int)
    return True, found


THROUGHPUT_EVENTS: Final = frozenset({"THROUGHPUT_UPGRADE"})


__all__ = [
    "ACCOUNT_FIELD",
    "CAPABILITY_FIELD",
    "FIELDS",
    "NAME_FIELD",
    "QUALITY_FIELD",
    "TIERS",
    "AccountEvent",
    "AccountUpdate",
    "CapabilityUpdate",
    "NameUpdate",
    "QualityUpdate",
    "decode",
    "messaging_limit",
    "tier_name",
]
