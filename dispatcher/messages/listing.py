"""Listing an account's messages: Twilio's filters and token paging over the ``by_account`` index.

The index is ordered by creation time, so a page is one cursor walk: newest
first, skipping what the filters reject, stopping one match past the page size
(that match proves there is a next page). Page tokens name a position in the
index, not a row, so deleting messages between two page requests never breaks
paging. ``PA...`` continues after (older than) a position, ``PB...`` returns the
page before (newer than) it, as Twilio's ``next``/``previous`` page URIs do.

An account's messages are spread over the buckets of their senders: each
bucket's index is walked from the same position and the walks are merged by
(creation ms, sid), so a page is newest first across buckets and a token, being
a position in that one order, stays valid whichever buckets the next page
comes from.

Across daemons that do not share a data root, the buckets attached elsewhere are
read by their owners: each owner walks its buckets from the same position with
the same filters and gives the first ``part_size`` matches (``read_part``, in
walk order), and those walks are merged with the local ones the same way, so
the page and its tokens are those one daemon holding every bucket would give.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Final

import attrs

from dispatcher.core import ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.models import MessageRecord
from dispatcher.core.params import Params, first, invalid
from dispatcher.core.store import Store
from dispatcher.core.twilio import TwilioError

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
FILTER_NAMES: Final = ("To", "From", "DateSent", "DateSent<", "DateSent>")

_TOKEN: Final = re.compile(r"^P(?P<dir>[AB])(?P<ms>[0-9]{1,16})_(?P<sid>[A-Z]{2}[0-9a-f]{32})$")
_DAY: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


@attrs.frozen
class Position:
    """A place in the index: just after (``after=True``, older) or before a message."""

    ms: int
    sid: str
    after: bool

    def token(self) -> str:
        return f"P{'A' if self.after else 'B'}{self.ms}_{self.sid}"


@attrs.frozen
class Query:
    to: str | None = None
    from_: str | None = None
    sent_from: float | None = None  # date_sent >= this
    sent_until: float | None = None  # date_sent < this
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    position: Position | None = None
    filters: tuple[tuple[str, str], ...] = ()  # as given, echoed in page URIs

    def matches(self, record: MessageRecord) -> bool:
        if self.to is not None and record.to_number != self.to:
            return False
        if self.from_ is not None and record.from_number != self.from_:
            return False
        if self.sent_from is None and self.sent_until is None:
            return True
        sent = record.date_sent
        if sent is None:
            return False
        if self.sent_from is not None and sent < self.sent_from:
            return False
        return self.sent_until is None or sent < self.sent_until


@attrs.frozen
class Page:
    records: list[MessageRecord]
    first: Position | None  # of the newest record on the page
    last: Position | None  # of the oldest
    has_next: bool


def parse_query(params: Params) -> Query:
    """Query-string parameters -> Query; a bad value is a Twilio 400 naming it."""
    filters = tuple((name, value) for name in FILTER_NAMES if (value := first(params, name)) is not None)
    given = dict(filters)
    sent_from = sent_until = None
    if "DateSent" in given:
        day = _parse_day(given["DateSent"], "DateSent")
        sent_from, sent_until = day, day + 86400.0
    if "DateSent>" in given:
        start = _parse_instant(given["DateSent>"], "DateSent>", end_of_day=False)
        sent_from = start if sent_from is None else max(sent_from, start)
    if "DateSent<" in given:
        end = _parse_instant(given["DateSent<"], "DateSent<", end_of_day=True)
        sent_until = end if sent_until is None else min(sent_until, end)
    page_size = _parse_int(params, "PageSize", DEFAULT_PAGE_SIZE, minimum=1)
    if page_size > MAX_PAGE_SIZE:
        raise TwilioError(
            400, 20007, f"Page size too large: the maximum page size is {MAX_PAGE_SIZE}, got {page_size}."
        )
    token = first(params, "PageToken")
    return Query(
        to=_address(given.get("To")),
        from_=_address(given.get("From")),
        sent_from=sent_from,
        sent_until=sent_until,
        page=_parse_int(params, "Page", 0, minimum=0),
        page_size=page_size,
        position=None if token is None else _parse_token(token),
        filters=filters,
    )


def read_page(
    buckets: Buckets,
    account_sid: str,
    query: Query,
    *,
    local: Collection[int] | None = None,
    parts: Sequence[Sequence[MessageRecord]] = (),
) -> Page:
    """One page of the account's messages, newest first, over every bucket (inline reads only).

    ``local``: the buckets read here (default: every one); ``parts``: what other daemons'
    ``read_part`` gave for the rest, each in its walk's order."""
    prefix = account_sid.encode() + b"\x00"
    pos = query.position
    walks = _walks(buckets, prefix, query, local)
    walks += [((ledger.account_key(r), r) for r in part) for part in parts]
    if pos is not None and not pos.after:
        # The page before a position: the page_size matches just newer, shown newest first.
        it = _matches(query, prefix, heapq.merge(*walks, key=_by_key))
        records = [r for _, r in zip(range(query.page_size), it, strict=False)]
        records.reverse()
        has_next = True  # the position itself is on a later page
    else:
        it = _matches(query, prefix, heapq.merge(*walks, key=_by_key, reverse=True))
        if pos is None and query.page > 0:
            # ``Page`` without a token (hand-built URL): skip the earlier pages.
            for _ in zip(range(query.page * query.page_size), it, strict=False):
                pass
        records = [r for _, r in zip(range(query.page_size + 1), it, strict=False)]
        has_next = len(records) > query.page_size
        del records[query.page_size :]
    if not records:
        return Page([], None, None, has_next=False)
    return Page(
        records,
        first=Position(_ms(records[0]), records[0].sid, after=False),
        last=Position(_ms(records[-1]), records[-1].sid, after=True),
        has_next=has_next,
    )


def part_size(query: Query) -> int:
    """How many matches of its buckets' walk a daemon gives another for ``query``'s page: as
    many as the page could take from them (a page before a position, a page and the one
    match proving a next page, or every page up to ``Page`` when it comes without a token)."""
    pos = query.position
    if pos is not None and not pos.after:
        return query.page_size
    skipped = query.page * query.page_size if pos is None else 0
    return skipped + query.page_size + 1


def read_part(
    buckets: Buckets, account_sid: str, query: Query, indexes: Collection[int]
) -> list[MessageRecord]:
    """The first ``part_size(query)`` matches of buckets ``indexes``, in the order ``read_page``
    walks them (newest first; oldest first for a page before a position)."""
    prefix = account_sid.encode() + b"\x00"
    walks = _walks(buckets, prefix, query, indexes)
    pos = query.position
    merged = heapq.merge(*walks, key=_by_key, reverse=pos is None or pos.after)
    it = _matches(query, prefix, merged)
    return [r for _, r in zip(range(part_size(query)), it, strict=False)]


_Walk = Iterator[tuple[bytes, "Store | MessageRecord"]]


def _walks(buckets: Buckets, prefix: bytes, query: Query, indexes: Collection[int] | None) -> list[_Walk]:
    """Each bucket's index walked from the query's position: older (or newer, for a page before it)."""
    stores = buckets.stores if indexes is None else [buckets.stores[i] for i in sorted(indexes)]
    pos = query.position
    if pos is not None and not pos.after:
        after = _key(prefix, pos) + b"\x00"
        return [_walk(store, store.scan(b"by_account", prefix, start=after)) for store in stores]
    below = None if pos is None else _key(prefix, pos)
    return [_walk(store, store.scan_back(b"by_account", prefix, below=below)) for store in stores]


def _walk(store: Store, keys: Iterator[tuple[bytes, bytes]]) -> _Walk:
    for key, _ in keys:
        yield key, store


def _by_key(item: tuple[bytes, Store | MessageRecord]) -> bytes:
    return item[0]


def _matches(query: Query, prefix: bytes, keys: _Walk) -> Iterator[MessageRecord]:
    skip = len(prefix) + 8  # account NUL, creation ms: the sid follows
    for key, source in keys:
        if isinstance(source, MessageRecord):  # another daemon's, read and matched there
            yield source
            continue
        raw = source.get(b"messages", key[skip:])
        if raw is None:
            continue  # deleted between the index read and this one
        record = ledger.load(raw)
        if query.matches(record):
            yield record


def _key(prefix: bytes, pos: Position) -> bytes:
    return prefix + pos.ms.to_bytes(8, "big") + pos.sid.encode()


def _ms(record: MessageRecord) -> int:
    return int(record.date_created * 1000)


_PREFIX: Final = re.compile(r"^[a-z][a-z0-9-]{0,19}:")


def _address(value: str | None) -> str | None:
    if value is None:
        return None
    raw = value.strip()
    match = _PREFIX.match(raw)  # whatsapp:, line:...: records keep addresses without their prefix
    return raw[match.end() :] if match is not None else raw


def _parse_int(params: Params, name: str, default: int, *, minimum: int) -> int:
    raw = first(params, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < minimum:
        raise invalid(f"The '{name}' parameter must be an integer >= {minimum}, got {raw!r}.")
    return int(raw)


def _parse_token(raw: str) -> Position:
    match = _TOKEN.match(raw)
    if not match:
        raise TwilioError(400, 21481, f"Invalid PageToken {raw!r}: use the page URIs of a previous response.")
    return Position(int(match["ms"]), match["sid"], after=match["dir"] == "A")


def _parse_day(raw: str, name: str) -> float:
    """``YYYY-MM-DD`` (or the SDK's ``YYYY-MM-DDT00:00:00Z`` for a date): that UTC day's start."""
    text = raw.strip()
    if "T" in text:
        text = text.split("T", 1)[0]
    if not _DAY.match(text):
        raise invalid(f"The '{name}' parameter must be a date (YYYY-MM-DD), got {raw!r}.")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise invalid(f"The '{name}' parameter must be a date (YYYY-MM-DD), got {raw!r}.") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _parse_instant(raw: str, name: str, *, end_of_day: bool) -> float:
    """A bound: a date means the whole day (``<`` includes it), a datetime that instant."""
    text = raw.strip()
    if _DAY.match(text):
        start = _parse_day(text, name)
        return start + 86400.0 if end_of_day else start
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(
            f"The '{name}' parameter must be a date (YYYY-MM-DD) or an ISO 8601 time, got {raw!r}."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # ``DateSent<`` with an instant includes it: the bound is exclusive just past it.
    return when.timestamp() + (timedelta(microseconds=1).total_seconds() if end_of_day else 0.0)
