"""Per-second samples of every number's counters, kept in memory for the console's plots.

The hot path does nothing for this: the actors bump the plain ints /metrics reads
(``SendCounts``), and ``Sampler.run`` reads them once a second on its own timer,
storing what changed since the last tick; it takes the full snapshot /metrics takes
(``statistics()``) only of a number that is not idle. Two rings per number:

- 1 s resolution for the last ``SECOND_SLOTS`` seconds (sparklines, the 5-minute
  counts of 429s and pair-rate answers, live plots);
- 10 s resolution for the last hour (the number page's plots), with send-latency
  percentiles estimated from the histogram's bucket counts over those 10 s.

A number gets its rings on its first activity (a counter moved or it holds
messages), so a large idle fleet costs a dict entry and a counters read per number
and tick: ~28 KB per active number (float32 rings). The tick times are shared by
every number. ``bench.console`` measures a tick.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, final

import attrs
import structlog
import trio

from actors.statistics import ActorStatistics, SendCounts
from dispatcher.core.clock import WallClock

log = structlog.get_logger()

SECOND_SLOTS: Final = 300
TEN_SECOND_SLOTS: Final = 360
COARSE_EVERY: Final = 10  # ticks per coarse slot
# Counters whose per-tick difference is stored (the same names as /metrics' counters).
COUNTERS: Final = ("accepted", "sent", "delivered", "read", "failed", "rate_limited", "pair_limited")
# Gauges stored as they are at the tick.
GAUGES: Final = ("send_rate", "rate", "outbox")
QUANTILES: Final = (0.5, 0.9, 0.99)
FINE_WIDTH: Final = len(COUNTERS) + len(GAUGES)
COARSE_WIDTH: Final = FINE_WIDTH + len(QUANTILES)


class Counted(Protocol):
    """What the sampler reads of a number actor: its counters, and the snapshot /metrics reads."""

    number: str
    counts: SendCounts

    def pending(self) -> int: ...

    def statistics(self) -> ActorStatistics: ...


@final
class Ring:
    """``slots`` rows of ``width`` float32 values; the oldest row is overwritten."""

    __slots__ = ("_next", "_values", "count", "slots", "width")

    def __init__(self, slots: int, width: int) -> None:
        self.slots = slots
        self.width = width
        self._values = array("f", bytes(4 * slots * width))
        self._next = 0
        self.count = 0  # rows written, up to ``slots``

    def push(self, row: Sequence[float]) -> None:
        start = self._next * self.width
        self._values[start : start + self.width] = array("f", row)
        self._next = (self._next + 1) % self.slots
        self.count = min(self.count + 1, self.slots)

    def column(self, index: int, last: int) -> list[float]:
        """The newest ``last`` values of one column, oldest first (fewer if fewer were written)."""
        n = min(last, self.count)
        out = []
        for age in range(n, 0, -1):
            slot = (self._next - age) % self.slots
            out.append(float(self._values[slot * self.width + index]))
        return out


@final
class TickTimes:
    """The wall time of each tick (float64), shared by every number's ring of one resolution."""

    def __init__(self, slots: int) -> None:
        self._ring = array("d", bytes(8 * slots))
        self._slots = slots
        self._next = 0
        self.count = 0

    def push(self, at: float) -> None:
        self._ring[self._next] = at
        self._next = (self._next + 1) % self._slots
        self.count = min(self.count + 1, self._slots)

    def last(self, n: int) -> list[float]:
        n = min(n, self.count)
        return [self._ring[(self._next - age) % self._slots] for age in range(n, 0, -1)]


@attrs.define(eq=False, slots=True)
class _Previous:
    """A number's counters at the last tick: what the next tick subtracts."""

    counters: tuple[int, ...]
    latency: tuple[int, ...]


@final
class NumberSeries:
    """One number's rings, and the coarse slot being summed."""

    __slots__ = ("coarse", "fine", "pending", "slot_latency")

    def __init__(self, latency: tuple[int, ...]) -> None:
        self.fine = Ring(SECOND_SLOTS, FINE_WIDTH)
        self.coarse = Ring(TEN_SECOND_SLOTS, COARSE_WIDTH)
        self.pending = [0.0] * FINE_WIDTH  # the coarse slot so far: counters summed, gauges last
        self.slot_latency = latency  # the latency histogram's counts when the coarse slot began


@attrs.frozen
class Plot:
    """Columns of one number (or the fleet) over time: ``times`` (Unix s) and one list per series."""

    times: list[float]
    series: dict[str, list[float]]


def counters_of(counts: SendCounts) -> tuple[int, ...]:
    """COUNTERS of a number, read from its plain ints (what statistics() copies)."""
    return (
        counts.accepted,
        counts.sent,
        counts.delivered,
        counts.read,
        sum(counts.failed_by_code.values()),
        counts.rate_limited,
        counts.pair_limited,
    )


def _latency_counts(stats: ActorStatistics) -> tuple[int, ...]:
    return () if stats.send_latency is None else tuple(c for _, c in stats.send_latency.buckets)


def _bounds(stats: ActorStatistics) -> tuple[float, ...]:
    return () if stats.send_latency is None else tuple(b for b, _ in stats.send_latency.buckets)


def quantile(q: float, bounds: Sequence[float], cumulative: Sequence[int]) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank ``q``; NaN if empty.

    The +Inf bucket answers its lower bound (the last finite one), as Prometheus does.
    """
    if not cumulative or cumulative[-1] <= 0:
        return math.nan
    rank = q * cumulative[-1]
    lower_bound, lower_count = 0.0, 0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            inside = count - lower_count
            fraction = 0.0 if inside == 0 else (rank - lower_count) / inside
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


@final
class Sampler:
    """Samples every number once per ``interval`` seconds; readers ask for plots and windows."""

    def __init__(
        self,
        *,
        actors: Callable[[], Iterable[Counted]],
        outbox_depth: Callable[[ActorStatistics], int],
        wall: WallClock,
        interval: float = 1.0,
    ) -> None:
        """``outbox_depth``: a number's depth as /metrics counts it (in memory while running)."""
        self._actors = actors
        self._outbox_depth = outbox_depth
        self._wall = wall
        self.interval = interval
        self._previous: dict[str, _Previous] = {}
        self._series: dict[str, NumberSeries] = {}
        self._bounds: tuple[float, ...] = ()
        self.fine_times = TickTimes(SECOND_SLOTS)
        self.coarse_times = TickTimes(TEN_SECOND_SLOTS)
        self.ticks = 0
        self.last_duration = 0.0  # seconds the last tick took (the console shows it)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled, on a fixed schedule (a late tick does not shift the next ones)."""
        self.tick()
        task_status.started()
        due = trio.current_time()
        while True:
            due += self.interval
            now = trio.current_time()
            if due < now:  # the loop was blocked for more than a tick: skip, don't catch up
                due = now + self.interval
            await trio.sleep_until(due)
            self.tick()

    def tick(self) -> None:
        began = trio.current_time()
        self.ticks += 1
        close_coarse = self.ticks % COARSE_EVERY == 0
        self.fine_times.push(self._wall.now())
        if close_coarse:
            self.coarse_times.push(self._wall.now())
        seen: set[str] = set()
        for actor in self._actors():
            seen.add(actor.number)
            counters = counters_of(actor.counts)
            previous = self._previous.get(actor.number)
            if (
                previous is not None
                and actor.number not in self._series
                and previous.counters == counters
                and actor.pending() == 0
            ):
                continue  # idle as ever: no snapshot taken (most of a large fleet, most ticks)
            self._sample(actor.statistics(), counters, previous, close_coarse)
        for gone in self._previous.keys() - seen:
            del self._previous[gone]
            self._series.pop(gone, None)
        self.last_duration = trio.current_time() - began

    def _sample(
        self,
        stats: ActorStatistics,
        counters: tuple[int, ...],
        previous: _Previous | None,
        close_coarse: bool,
    ) -> None:
        latency = _latency_counts(stats)
        if latency and not self._bounds:
            self._bounds = _bounds(stats)
        outbox = self._outbox_depth(stats)
        if previous is None:
            # First sight (start, or added by a reload): the counters so far are not this tick's.
            self._previous[stats.number] = _Previous(counters, latency)
            deltas: Sequence[int] = (0,) * len(counters)
            latency_before = latency
        else:
            deltas = [now - before for now, before in zip(counters, previous.counters, strict=True)]
            latency_before = previous.latency
            previous.counters, previous.latency = counters, latency
        series = self._series.get(stats.number)
        if series is None:
            if not any(deltas) and outbox == 0:
                return  # idle since we know it: no rings yet
            series = self._series[stats.number] = NumberSeries(latency_before)
        row = [*map(float, deltas), stats.send_rate, stats.rate, float(outbox)]
        series.fine.push(row)
        pending = series.pending
        for i in range(len(COUNTERS)):
            pending[i] += row[i]
        for i in range(len(COUNTERS), FINE_WIDTH):
            pending[i] = row[i]  # gauges: the value at the slot's end
        if close_coarse:
            counts = [now - before for now, before in zip(latency, series.slot_latency, strict=False)]
            series.slot_latency = latency
            cumulative = counts if len(counts) == len(self._bounds) else []
            span = COARSE_EVERY * self.interval
            rates = [value / span for value in pending[: len(COUNTERS)]]
            qs = [quantile(q, self._bounds, cumulative) for q in QUANTILES]
            series.coarse.push([*rates, *pending[len(COUNTERS) :], *qs])
            series.pending = [0.0] * FINE_WIDTH

    # -- reading ----------------------------------------------------------------------

    def active(self, number: str) -> bool:
        return number in self._series

    def recent(self, number: str, counter: str, seconds: int) -> int:
        """How much ``counter`` (one of COUNTERS) grew over the last ``seconds`` sampled seconds."""
        series = self._series.get(number)
        if series is None:
            return 0
        return round(sum(series.fine.column(COUNTERS.index(counter), seconds)))

    def sparkline(self, number: str, counter: str = "sent", seconds: int = 120) -> list[float]:
        """Per-second values of ``counter`` over the last ``seconds`` ticks, zeros before activity."""
        series = self._series.get(number)
        values = [] if series is None else series.fine.column(COUNTERS.index(counter), seconds)
        missing = min(seconds, self.fine_times.count) - len(values)
        return [0.0] * max(0, missing) + [v / self.interval for v in values]

    def fine_plot(self, number: str, seconds: int = SECOND_SLOTS) -> Plot:
        """Per-second series over the last ``seconds``: every counter as a rate, and the gauges."""
        return self._plot(number, seconds, fine=True)

    def coarse_plot(self, number: str, slots: int = TEN_SECOND_SLOTS) -> Plot:
        """10 s series over the last ``slots`` slots: counters as per-second rates, gauges, latency."""
        return self._plot(number, slots, fine=False)

    def _plot(self, number: str, n: int, *, fine: bool) -> Plot:
        times = (self.fine_times if fine else self.coarse_times).last(n)
        names = [*COUNTERS, *GAUGES] + ([] if fine else [f"p{round(q * 100)}" for q in QUANTILES])
        series = self._series.get(number)
        out: dict[str, list[float]] = {}
        for index, name in enumerate(names):
            values: list[float] = []
            if series is not None:
                ring = series.fine if fine else series.coarse
                values = ring.column(index, len(times))
                if fine and index < len(COUNTERS):
                    values = [v / self.interval for v in values]
            out[name] = [math.nan] * (len(times) - len(values)) + values
        return Plot(times=times, series=out)
