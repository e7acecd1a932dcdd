"""The fleet at a glance: one row per number, filtered, sorted and paged on the server.

Built from the counters /metrics reads (each actor's ``statistics()``), the
per-second samples (``samples.Sampler``) and, for the rows of the page only,
one LMDB read per number for the age of its oldest queued message. A fleet of
1,000 numbers renders in milliseconds (``tests/frontdoor/test_console_scale.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, final

import attrs
import msgspec

from actors.statistics import ActorStatistics
from actors.supervisor import Supervisor
from dispatcher.core import ledger, number_watch, outbox
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory
from dispatcher.core.models import entry_decoder
from dispatcher.core.store import Store, number_key
from dispatcher.ops.operations import Operations
from dispatcher.ops.samples import Sampler

WINDOW: Final = 300  # seconds: "the last 5 minutes" of the 429 and pair-rate columns
SPARK_SECONDS: Final = 120
MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 50
STATES: Final = ("running", "paused", "draining", "degraded", "starting", "restarting", "storage", "stopped")
SORT_KEYS: Final = (
    "number",
    "channel",
    "state",
    "outbox",
    "oldest",
    "send_rate",
    "limited",
    "pair_limited",
    "token",
    "tier",
    "sent",
    "failed",
)

# Sort keys whose figures are filled in late (``FleetView._complete``).
LATE_KEYS: Final = frozenset({"oldest", "limited", "pair_limited"})


@attrs.frozen
class Standing:
    """What Meta said of a number: its quality rating and the problems in force (flagged...)."""

    quality: str | None = None  # GREEN | YELLOW | RED | UNKNOWN
    problems: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.quality is not None or bool(self.problems)


Standings = Callable[[str], Standing]
"""A number's standing at Meta (``Standing()`` when Meta never said)."""


def unknown_standing(number: str) -> Standing:
    return Standing()


def watched_standing(buckets: Buckets, wall: WallClock) -> Standings:
    """The standing the account watch recorded from Meta's webhooks (one LMDB read per number)."""

    def standing(number: str) -> Standing:
        record = number_watch.load(buckets.for_number(number), number)
        return Standing(record.quality, tuple(record.problems(wall.now())))

    return standing


@attrs.frozen
class FleetRow:
    number: str
    account: str
    channel: str  # onprem | cloud
    state: str
    outbox: int
    oldest_age: float | None  # seconds the oldest queued message has waited
    send_rate: float  # sends/s in force
    rate: float  # configured
    limited: int  # 429s (and Meta's rate answers) in the last WINDOW seconds
    pair_limited: int  # 131056 answers in the last WINDOW seconds
    parked: int  # recipients held back now (pair rate / tier)
    token_expires_in: float | None
    tier_used: int
    tier_limit: int | None
    standing: Standing  # Meta's quality rating and problems (read for shown rows only)
    sent: int
    failed: int
    in_flight: int
    degraded: str | None
    spark: list[float]  # sends per second, the last SPARK_SECONDS seconds


@attrs.frozen
class FleetQuery:
    text: str = ""  # a substring of the number or account
    state: str = ""  # one of STATES, or "" for all
    channel: str = ""
    sort: str = "number"
    descending: bool = False
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE


class QueryError(ValueError):
    """A console query parameter out of range: the message names it."""


def parse_fleet_query(args: Callable[[str], str | None]) -> FleetQuery:
    sort = args("sort") or "number"
    if sort not in SORT_KEYS:
        raise QueryError(f"sort: one of {', '.join(SORT_KEYS)}")
    order = args("order") or "asc"
    if order not in ("asc", "desc"):
        raise QueryError("order: asc or desc")
    state = args("state") or ""
    if state and state not in STATES:
        raise QueryError(f"state: one of {', '.join(STATES)}")
    channel = args("channel") or ""
    if channel and channel not in ("onprem", "cloud"):
        raise QueryError("channel: onprem or cloud")
    return FleetQuery(
        text=(args("q") or "").strip()[:64],
        state=state,
        channel=channel,
        sort=sort,
        descending=order == "desc",
        page=int_arg(args, "page", 0, 0, 1_000_000),
        page_size=int_arg(args, "size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )


def int_arg(args: Callable[[str], str | None], name: str, default: int, low: int, high: int) -> int:
    raw = args(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name}: expected an integer") from None
    if not low <= value <= high:
        raise QueryError(f"{name}: between {low} and {high}")
    return value


@attrs.frozen
class FleetPage:
    rows: list[FleetRow]
    total: int  # numbers matching the filters
    fleet: int  # numbers configured
    query: FleetQuery
    has_quality: bool  # Meta rated some number of the page or reported a problem: show the column
    states: dict[str, int]  # numbers per state, over the whole fleet
    unreachable: tuple[str, ...] = ()  # daemons whose numbers are missing (a cluster's fleet)


class FleetPart(msgspec.Struct, kw_only=True):
    """One daemon's share of a cluster's fleet page: its first rows under the page's filters and
    order (as many as the page could take from it, each complete), and its counts."""

    rows: list[FleetRow]
    total: int
    fleet: int
    states: dict[str, int]


@final
class FleetView:
    def __init__(
        self,
        *,
        supervisor: Supervisor,
        directory: Directory,
        ops: Operations,
        buckets: Buckets,
        sampler: Sampler,
        wall: WallClock,
        standings: Standings = unknown_standing,
    ) -> None:
        self._supervisor = supervisor
        self._directory = directory
        self._ops = ops
        self._buckets = buckets
        self._sampler = sampler
        self._wall = wall
        self._standings = standings

    def page(self, query: FleetQuery) -> FleetPage:
        rows, fleet, states = self._matching(query)
        complete_first = query.sort in LATE_KEYS
        if complete_first:
            rows = [self._complete(row) for row in rows]
        _order(rows, query)
        start = query.page * query.page_size
        shown = rows[start : start + query.page_size]
        if not complete_first:
            shown = [self._complete(row) for row in shown]
        return FleetPage(
            rows=shown,
            total=len(rows),
            fleet=fleet,
            query=query,
            has_quality=any(r.standing.known for r in shown),
            states=dict(sorted(states.items())),
        )

    def part(self, query: FleetQuery) -> FleetPart:
        """This daemon's share of ``query``'s page over a cluster (``merge`` puts the shares together)."""
        rows, fleet, states = self._matching(query)
        complete_first = query.sort in LATE_KEYS
        if complete_first:
            rows = [self._complete(row) for row in rows]
        total = len(rows)
        _order(rows, query)
        rows = rows[: (query.page + 1) * query.page_size]
        if not complete_first:
            rows = [self._complete(row) for row in rows]
        return FleetPart(rows=rows, total=total, fleet=fleet, states=states)

    def _matching(self, query: FleetQuery) -> tuple[list[FleetRow], int, dict[str, int]]:
        """The rows ``query`` filters in (their late figures not filled), the fleet's size, per state."""
        rows: list[FleetRow] = []
        states: dict[str, int] = {}
        fleet = 0
        all_states = self._ops.states()
        for actor in self._supervisor.actors():
            fleet += 1
            stats = actor.statistics()
            row = self._row(stats, all_states.get(stats.number, "stopped"))
            states[row.state] = states.get(row.state, 0) + 1
            if _wanted(row, query):
                rows.append(row)
        return rows, fleet, states

    def row(self, number: str) -> FleetRow:
        """One number's row (UnknownNumber if it is not configured)."""
        state = self._ops.state(number)
        actor = self._supervisor.actor(number)
        assert actor is not None  # ops.state raised otherwise
        return self._complete(self._row(actor.statistics(), state))

    def _row(self, stats: ActorStatistics, state: str) -> FleetRow:
        number = stats.number
        info = self._directory.get(number)
        return FleetRow(
            number=number,
            account=info.account_sid if info is not None else "",
            channel="cloud" if info is not None and info.cloud is not None else "onprem",
            state=state,
            outbox=outbox_depth(self._buckets, stats),
            oldest_age=None,
            send_rate=stats.send_rate,
            rate=stats.rate,
            limited=0,
            pair_limited=0,
            parked=stats.parked,
            token_expires_in=stats.token_expires_in,
            tier_used=stats.tier_used,
            tier_limit=stats.tier_limit,
            standing=Standing(),
            sent=stats.sent,
            failed=sum(count for _, count in stats.failed_by_code),
            in_flight=stats.in_flight,
            degraded=stats.degraded,
            spark=[],
        )

    def _complete(self, row: FleetRow) -> FleetRow:
        """The figures that cost more than a counter read (samples, an LMDB read): for shown rows,
        or for every row when the page sorts by one of them."""
        number = row.number
        sampler = self._sampler
        created = oldest_created(self._buckets.for_number(number), number) if row.outbox else None
        return attrs.evolve(
            row,
            oldest_age=None if created is None else max(0.0, self._wall.now() - created),
            limited=sampler.recent(number, "rate_limited", WINDOW),
            pair_limited=sampler.recent(number, "pair_limited", WINDOW),
            spark=sampler.sparkline(number, "sent", SPARK_SECONDS),
            standing=self._standings(number),
        )


def outbox_depth(buckets: Buckets, stats: ActorStatistics) -> int:
    """As /metrics counts it: the durable depth, kept with the outbox (O(1))."""
    return outbox.depth(buckets.for_number(stats.number), stats.number)


def oldest_created(store: Store, number: str) -> float | None:
    """``date_created`` of the number's oldest outbox entry (one cursor step, one record read)."""
    for _, value in store.scan(b"outbox", number_key(number)):
        raw = store.get(b"messages", ledger.sid_key(entry_decoder.decode(value).sid))
        return None if raw is None else ledger.load(raw).date_created
    return None


def merge(query: FleetQuery, parts: Sequence[FleetPart], unreachable: Sequence[str] = ()) -> FleetPage:
    """The page of ``query`` over several daemons' shares, as one daemon running them all gives it."""
    rows = [row for part in parts for row in part.rows]
    _order(rows, query)
    start = query.page * query.page_size
    shown = rows[start : start + query.page_size]
    states: dict[str, int] = {}
    for part in parts:
        for state, count in part.states.items():
            states[state] = states.get(state, 0) + count
    return FleetPage(
        rows=shown,
        total=sum(part.total for part in parts),
        fleet=sum(part.fleet for part in parts),
        query=query,
        has_quality=any(r.standing.known for r in shown),
        states=dict(sorted(states.items())),
        unreachable=tuple(unreachable),
    )


def _order(rows: list[FleetRow], query: FleetQuery) -> None:
    """In place: by number, then (stable, also reversed: equal values stay in number order) by the sort."""
    rows.sort(key=lambda r: r.number)
    if query.sort != "number" or query.descending:
        rows.sort(key=lambda r: _sort_key(r, query.sort), reverse=query.descending)


def _wanted(row: FleetRow, query: FleetQuery) -> bool:
    if query.state and row.state != query.state:
        return False
    if query.channel and row.channel != query.channel:
        return False
    text = query.text
    return not text or text in row.number or text.lower() in row.account.lower()


def _sort_key(row: FleetRow, sort: str) -> tuple[bool | float | str, ...]:
    if sort == "number":
        return (row.number,)
    if sort == "channel":
        return (row.channel,)
    if sort == "state":
        return (row.state,)
    value: float | None
    if sort == "oldest":
        value = row.oldest_age
    elif sort == "token":
        value = row.token_expires_in
    elif sort == "tier":
        value = None if row.tier_limit is None else row.tier_used / max(1, row.tier_limit)
    else:
        value = float(getattr(row, sort))
    # An unknown value (no token, no tier) sorts as the smallest.
    return (value is not None, value if value is not None else 0.0)


__all__: Sequence[str] = [
    "FleetPage",
    "FleetPart",
    "FleetQuery",
    "FleetRow",
    "FleetView",
    "QueryError",
    "merge",
]
