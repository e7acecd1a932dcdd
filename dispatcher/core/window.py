"""The 24-hour customer-service window per (sender number, customer).

WhatsApp lets a business send free-form messages to a customer only within 24
hours of that customer's last message to the number; outside it only templates
go. The time of each customer's last inbound message is kept in LMDB (``window``
DB, key ``number NUL customer``), updated by inbound webhooks and read inline at
create time.
"""

from __future__ import annotations

import struct
from typing import Final

from dispatcher.core import keys
from dispatcher.core.store import Store, WriteTxn, number_key

WINDOW_SECONDS: Final = 24 * 3600.0
_TIME: Final = struct.Struct(">d")


def _key(number: str, customer: str) -> bytes:
    return number_key(number, keys.part(customer))


def touch(txn: WriteTxn, number: str, customer: str, at: float) -> None:
    """Inside a write: the customer wrote to ``number`` at wall time ``at`` (never moves back)."""
    key = _key(number, customer)
    old = txn.get(b"window", key)
    if old is None or _TIME.unpack(old)[0] < at:
        txn.put(b"window", key, _TIME.pack(at))


def last_inbound(store: Store, number: str, customer: str) -> float | None:
    """Wall time of the customer's last message to ``number``, or None if never."""
    raw = store.get(b"window", _key(number, customer))
    return None if raw is None else float(_TIME.unpack(raw)[0])


def is_open(store: Store, number: str, customer: str, now: float) -> bool:
    last = last_inbound(store, number, customer)
    return last is not None and now - last < WINDOW_SECONDS
