"""/metrics for Meta's word on the numbers: standing, tier, throughput, account updates, Graph versions.

Read at scrape time from the watch records in LMDB (one read per Cloud number) and
the counters of the account watch and the Graph health; nothing on the hot path.
The tier and rate the actor enforces are already ``wadispatch_tier_recipients_limit``
and ``wadispatch_rate_limit``; here is what Meta said, so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatcher.channels import account_webhook as aw
from dispatcher.core import number_watch
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.ops.graph_health import GraphHealth
from dispatcher.webhooks.account import HIGH, AccountWatch, WatchedNumber


@final
class NumberWatchCollector(Collector):
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        numbers: Callable[[], Iterable[WatchedNumber]],
        watch: AccountWatch,
        health: GraphHealth,
    ) -> None:
        self._buckets = buckets
        self._wall = wall
        self._numbers = numbers
        self._watch = watch
        self._health = health

    def collect(self) -> Iterator[Metric]:
        labels = ["number"]
        problem = GaugeMetricFamily(
            "wadispatch_number_problem",
            "1 while Meta reports the number flagged, restricted or disabled (by problem).",
            labels=["number", "problem"],
        )
        quality = GaugeMetricFamily(
            "wadispatch_number_quality",
            "The number's quality rating at Meta: 1 for the rating in force.",
            labels=["number", "rating"],
        )
        tier = GaugeMetricFamily(
            "wadispatch_number_meta_tier",
            "The messaging limit Meta last announced (unique recipients per 24 h; -1 unlimited).",
            labels=labels,
        )
        upgraded = GaugeMetricFamily(
            "wadispatch_number_throughput_upgraded",
            "1 once Meta upgraded the number's throughput (HIGH), else 0.",
            labels=labels,
        )
        paused = GaugeMetricFamily(
            "wadispatch_number_paused_by_meta",
            "1 while the number is paused because of a problem Meta reported ([watch] pause_on).",
            labels=labels,
        )
        now = self._wall.now()
        for watched in self._numbers():
            n = watched.number
            record = number_watch.load(self._buckets.for_number(n), n)
            found = set(record.problems(now))
            for name in number_watch.PROBLEMS:
                problem.add_metric([n, name.lower()], 1.0 if name in found else 0.0)
            if record.quality:
                quality.add_metric([n, record.quality], 1.0)
            if record.messaging_tier in aw.TIERS:
                limit = aw.TIERS[record.messaging_tier]
                tier.add_metric([n], -1.0 if limit is None else float(limit))
            upgraded.add_metric([n], 1.0 if record.throughput_level == HIGH else 0.0)
            paused.add_metric([n], 1.0 if record.paused_by_watch else 0.0)
        yield from (problem, quality, tier, upgraded, paused)
        updates = CounterMetricFamily(
            "wadispatch_account_updates",
            "Account webhook changes applied, by field and event.",
            labels=["field", "event"],
        )
        for key, count in sorted(self._watch.applied.items()):
            field, _, event = key.partition(":")
            updates.add_metric([field, event], count)
        yield updates
        unread = CounterMetricFamily(
            "wadispatch_account_updates_unreadable",
            "Account webhook changes that could not be read (logged).",
        )
        unread.add_metric([], self._watch.unapplied)
        yield unread
        versions = GaugeMetricFamily(
            "wadispatch_graph_version_days_left",
            "Days until the configured Graph version stops working (negative: past it).",
            labels=["version"],
        )
        served = GaugeMetricFamily(
            "wadispatch_graph_version_upgraded",
            "1 if Meta served the configured Graph version's calls with a newer one (it has expired).",
            labels=["version", "served"],
        )
        for verdict in self._health.verdicts():
            if verdict.days_left is not None:
                versions.add_metric([verdict.configured], float(verdict.days_left))
            served.add_metric([verdict.configured, verdict.served or ""], 1.0 if verdict.upgraded else 0.0)
        yield from (versions, served)
