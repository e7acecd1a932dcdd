"""How the console shows figures: one function per table row, used by the HTML and by the live JSON.

A row is a list of ``Cell`` (text, CSS class, link): the server renders them into
the page (so tables work without JavaScript) and the live endpoints send the same
cells as JSON, which ``console.js`` writes into the table with ``textContent``.
Formatting lives here only, never in JavaScript.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Final
from urllib.parse import quote, urlencode

import attrs
import jinja2
import msgspec

from dispatcher.ops.callback_view import Destination
from dispatcher.ops.fleet_view import FleetQuery, FleetRow
from dispatcher.ops.samples import Plot

SPARK_WIDTH: Final = 120
SPARK_HEIGHT: Final = 18


class Cell(msgspec.Struct, omit_defaults=True):
    text: str
    cls: str = ""
    href: str = ""
    spark: str = ""  # SVG polyline points, for a sparkline cell
    title: str = ""


@attrs.frozen
class Column:
    key: str  # the sort key, or "" when the column does not sort
    label: str
    title: str = ""


FLEET_COLUMNS: Final = (
    Column("number", "Number"),
    Column("", "Account"),
    Column("channel", "Channel"),
    Column("state", "State"),
    Column("outbox", "Outbox", "Messages waiting in the durable outbox"),
    Column("oldest", "Oldest", "How long the oldest queued message has waited"),
    Column("send_rate", "Rate", "Sends per second in force / configured"),
    Column("limited", "429s 5m", "Rate-limit answers in the last 5 minutes"),
    Column("pair_limited", "Pair 5m", "Pair-rate answers (131056) in the last 5 minutes"),
    Column("", "Parked", "Recipients held back now for their pair rate or the tier budget"),
    Column("token", "Token", "Time until the API token expires"),
    Column("tier", "Tier", "Business-initiated recipients in 24 h / the messaging tier's limit"),
    Column("sent", "Sent"),
    Column("failed", "Failed"),
    Column("", "Sends/s", "Sends per second over the last 2 minutes"),
)
QUALITY_COLUMN: Final = Column("", "Quality", "Meta's quality rating of the number, and problems it reported")


def count(value: int) -> str:
    return f"{value:,}"


def duration(seconds: float | None) -> str:
    """``95`` -> ``1 min 35 s``; None -> ``—``."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 0:
        return "expired"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def spark_points(values: Sequence[float]) -> str:
    """SVG polyline points for a sparkline SPARK_WIDTH x SPARK_HEIGHT, scaled to its own peak."""
    if not values:
        return ""
    peak = max(max(values), 1.0)
    step = SPARK_WIDTH / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 1 - (v / peak) * (SPARK_HEIGHT - 2):.1f}"
        for i, v in enumerate(values)
    )


def number_href(number: str) -> str:
    return "/console/numbers/" + quote(number, safe="+")


def tier(row: FleetRow) -> str:
    if row.channel != "cloud":
        return "—"
    return f"{count(row.tier_used)} / {'unlimited' if row.tier_limit is None else count(row.tier_limit)}"


def fleet_cells(row: FleetRow, *, quality: bool) -> list[Cell]:
    state_cls = f"state state-{row.state}"
    cells = [
        Cell(row.number, "num", number_href(row.number)),
        Cell(row.account, "acct"),
        Cell(row.channel),
        Cell(row.state, state_cls, title=row.degraded or ""),
        Cell(count(row.outbox), "n"),
        Cell(duration(row.oldest_age), "n"),
        Cell(f"{rate(row.send_rate)} / {rate(row.rate)}", "n"),
        Cell(count(row.limited), "n warn" if row.limited else "n"),
        Cell(count(row.pair_limited), "n warn" if row.pair_limited else "n"),
        Cell(count(row.parked), "n"),
        Cell(duration(row.token_expires_in), "n"),
        Cell(tier(row), "n"),
    ]
    if quality:
        cells.append(standing_cell(row))
    cells += [
        Cell(count(row.sent), "n"),
        Cell(count(row.failed), "n bad" if row.failed else "n"),
        Cell("", "spark", spark=spark_points(row.spark)),
    ]
    return cells


def standing_cell(row: FleetRow) -> Cell:
    """``RED · flagged, restricted``: Meta's rating, then the problems in force."""
    standing = row.standing
    text = " · ".join(part for part in (standing.quality or "", ", ".join(standing.problems)) if part)
    rating = (standing.quality or "unknown").lower()
    return Cell(text or "—", f"quality-{rating}" + (" bad" if standing.problems else ""))


def fleet_columns(quality: bool) -> list[Column]:
    columns = list(FLEET_COLUMNS)
    if quality:
        columns.insert(12, QUALITY_COLUMN)
    return columns


def fleet_url(query: FleetQuery, **changes: object) -> str:
    """The fleet page's URL for ``query`` with ``changes`` (sort, order, page...)."""
    params = {
        "q": query.text,
        "state": query.state,
        "channel": query.channel,
        "sort": query.sort,
        "order": "desc" if query.descending else "asc",
        "page": str(query.page),
        "size": str(query.page_size),
    }
    params.update({k: str(v) for k, v in changes.items()})
    defaults = {"sort": "number", "order": "asc", "page": "0", "size": "50"}
    kept = {k: v for k, v in params.items() if v and defaults.get(k) != v}
    return "/console/fleet" + (f"?{urlencode(kept)}" if kept else "")


def destination_cells(d: Destination) -> list[Cell]:
    depth = count(d.depth) + ("+" if d.depth_capped else "")
    return [
        Cell(d.origin, "num"),
        Cell(depth, "n"),
        Cell(duration(d.oldest_age), "n"),
        Cell(count(d.in_flight), "n"),
        Cell(count(d.failures), "n bad" if d.failures else "n"),
        Cell(duration(d.retry_in), "n"),
        Cell(count(d.gave_up), "n bad" if d.gave_up else "n"),
    ]


DESTINATION_COLUMNS: Final = (
    Column("", "Destination"),
    Column("", "Queued"),
    Column("", "Oldest"),
    Column("", "In flight"),
    Column("", "Failing", "Consecutive failed attempts"),
    Column("", "Retry in"),
    Column("", "Gave up", "Callbacks dropped after callbacks.give_up_after, since start"),
)


def plot_json(plot: Plot) -> dict[str, object]:
    """A plot for uPlot: NaN (no sample) becomes null."""
    return {
        "times": plot.times,
        "series": {
            name: [None if math.isnan(v) else round(v, 4) for v in values]
            for name, values in plot.series.items()
        },
    }


def environment() -> jinja2.Environment:
    """The console's templates, from the package (no file system path, no build step)."""
    root = resources.files("dispatcher.frontdoor.console") / "templates"
    sources = {item.name: item.read_text("utf-8") for item in root.iterdir() if item.name.endswith(".html")}
    env = jinja2.Environment(
        loader=jinja2.DictLoader(sources),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(count=count, duration=duration, rate=rate, number_href=number_href)
    return env
