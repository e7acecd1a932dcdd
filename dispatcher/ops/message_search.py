"""Finding messages for operators: by sid, or by recipient within a time range, in every account.

A sid is one key read. A search by ``To`` walks each account's ``by_account``
index (ordered by creation time) in every bucket, newest first from the range's
end, and stops at the range's start or after ``SCAN_LIMIT`` messages per account
and bucket; the newest page of what it found is shown, and the answer says when
there may be more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, final

import attrs

from dispatcher.core import ledger
from dispatcher.core.buckets import Buckets
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
    def __init__(self, *, buckets: Buckets, accounts: Callable[[], Iterable[str]]) -> None:
        """``accounts``: the account sids to search (the configured ones)."""
        self._buckets = buckets
        self._accounts = accounts

    def by_sid(self, sid: str) -> MessageRecord | None:
        if not sid.isascii() or not sid.isalnum() or len(sid) > 64:
            return None
        found = self._buckets.message(sid)
        return None if found is None else ledger.load(found[1])

    def by_recipient(self, to: str, since: float, until: float, limit: int = PAGE_SIZE) -> Found:
        """Messages to or from ``to`` (E.164) created in [since, until), newest first."""
        found: list[MessageRecord] = []
        complete = True
        for account in sorted(set(self._accounts())):
            for store in self._buckets.stores:
                complete &= _search(store, account, to, since, until, found)
        found.sort(key=lambda r: (r.date_created, r.sid), reverse=True)
        if len(found) > limit:
            complete = False
        return Found(records=found[:limit], complete=complete)


def _search(
    store: Store, account: str, to: str, since: float, until: float, found: list[MessageRecord]
) -> bool:
    """Add the account's messages with ``to`` in one bucket to ``found``; False if it stopped early."""
    prefix = account.encode() + b"\x00"
    skip = len(prefix) + 8
    below = prefix + int(until * 1000).to_bytes(8, "big")
    scanned = 0
    for key, _ in store.scan_back(b"by_account", prefix, below=below):
        if int.from_bytes(key[len(prefix) : skip], "big") < since * 1000:
            return True
        scanned += 1
        if scanned > SCAN_LIMIT:
            return False
        raw = store.get(b"messages", key[skip:])
        if raw is None:
            continue
        record = ledger.load(raw)
        if to in (record.to_number, record.from_number):
            found.append(record)
    return True


@attrs.frozen
class Step:
    """One status of a message's life, with its time and what set it."""

    status: str
    at: float | None  # None: the record does not keep this status's time
    source: str


WEBHOOK: Final = "status webhook"


def timeline(record: MessageRecord) -> list[Step]:
    """The message's life: its creation, then each status it reached, with its time and source.

    The record keeps a time per step (created, sent, delivered, read, and the latest change
    for a final failed / undelivered / canceled); what moved a message to ``failed`` before
    it was sent is read from its error code. A ``delivered`` never reported (``read`` came
    alone) is listed without a time.
    """
    if record.direction == "inbound":
        return [Step("received", record.date_created, "inbound webhook")]
    first = "scheduled" if record.send_at is not None else "queued"
    steps = [Step(f"created ({first})", record.date_created, "API request")]
    if record.send_at is not None and record.status != "scheduled" and record.status != "canceled":
        steps.append(Step("queued", record.send_at, "the scheduler, at its send time"))
    if record.date_sent is not None:
        steps.append(Step("sent", record.date_sent, "the channel accepted the send"))
    if record.date_delivered is not None or record.date_read is not None:
        steps.append(Step("delivered", record.date_delivered, WEBHOOK))
    if record.date_read is not None:
        steps.append(Step("read", record.date_read, WEBHOOK))
    if record.status in ("failed", "undelivered", "canceled"):
        steps.append(Step(record.status, record.date_updated, _failed_by(record)))
    return steps


def _failed_by(record: MessageRecord) -> str:
    if record.status == "canceled":
        return "API request (cancel)"
    if record.date_sent is not None:
        return WEBHOOK
    if record.error_code == 63016:
        scheduled = record.send_at is not None
        return (
            "the scheduler (outside the 24 h window)"
            if scheduled
            else "create rules (outside the 24 h window)"
        )
    if record.error_code == 30036:
        return "not sent in time (validity period, or withdrawn for its fallback)"
    return "the actor (the channel refused the send, or retries gave up)"
