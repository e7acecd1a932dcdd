"""Finding messages for operators: by sid, or by recipient within a time range, in every account.

A sid is one key read. A search by ``To`` walks each account's ``by_account``
index (ordered by creation time) newest first from the range's end, and stops
at the range's start, after ``SCAN_LIMIT`` messages per account, or once it has
a page: the answer says when it stopped early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, final

import attrs

from dispatcher.core import ledger
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store

SCAN_LIMIT: Final = 20_000
PAGE_SIZE: Final = 50


@attrs.frozen
class Found:
    records: list[MessageRecord]  # newest first
    complete: bool  # False: some account's scan stopped at SCAN_LIMIT or the page filled


@final
class MessageSearch:
    def __init__(self, *, store: Store, accounts: Callable[[], Iterable[str]]) -> None:
        """``accounts``: the account sids to search (the configured ones)."""
        self._store = store
        self._accounts = accounts

    def by_sid(self, sid: str) -> MessageRecord | None:
        if not sid.isascii() or not sid.isalnum() or len(sid) > 64:
            return None
        raw = self._store.get(b"messages", ledger.sid_key(sid))
        return None if raw is None else ledger.load(raw)

    def by_recipient(self, to: str, since: float, until: float, limit: int = PAGE_SIZE) -> Found:
        """Messages to or from ``to`` (E.164) created in [since, until), newest first."""
        found: list[MessageRecord] = []
        complete = True
        for account in sorted(set(self._accounts())):
            prefix = account.encode() + b"\x00"
            skip = len(prefix) + 8
            below = prefix + int(until * 1000).to_bytes(8, "big")
            scanned = 0
            for key, _ in self._store.scan_back(b"by_account", prefix, below=below):
                if int.from_bytes(key[len(prefix) : skip], "big") < since * 1000:
                    break
                scanned += 1
                if scanned > SCAN_LIMIT:
                    complete = False
                    break
                raw = self._store.get(b"messages", key[skip:])
                if raw is None:
                    continue
                record = ledger.load(raw)
                if to in (record.to_number, record.from_number):
                    found.append(record)
        found.sort(key=lambda r: r.date_created, reverse=True)
        if len(found) > limit:
            complete = False
        return Found(records=found[:limit], complete=complete)


@attrs.frozen
class Step:
    """One status of a message's life, with its time and what set it."""

    status: str
    at: float | None  # None: the record does not keep this status's time
    source: str


_SOURCE: Final = {
    "sent": "channel (send answered)",
    "delivered": "status webhook",
    "read": "status webhook",
    "undelivered": "status webhook",
    "canceled": "API (cancel)",
    "scheduled": "API (create)",
}


def timeline(record: MessageRecord) -> list[Step]:
    """The message's statuses with their times, as far as the record keeps them.

    The record keeps the creation time, the time the channel accepted the send
    (``date_sent``) and the time of the latest change (``date_updated``); a status
    passed in between (``delivered`` before ``read``) is listed without a time.
    """
    if record.direction == "inbound":
        return [Step("received", record.date_created, "webhook (inbound message)")]
    steps = [
        Step("scheduled" if record.send_at is not None else "queued", record.date_created, "API (create)")
    ]
    final_status = record.status
    if record.date_sent is not None:
        steps.append(Step("sent", record.date_sent, _SOURCE["sent"]))
        if final_status == "read":
            steps.append(Step("delivered", None, _SOURCE["delivered"]))
    if final_status not in ("queued", "accepted", "scheduled", "sent"):
        source = _SOURCE.get(final_status, "")
        if final_status == "failed":
            source = "status webhook" if record.date_sent is not None else "actor (send refused or given up)"
        steps.append(Step(final_status, record.date_updated, source))
    return steps
