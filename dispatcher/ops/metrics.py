"""``/metrics``: Prometheus text rendered at scrape time from plain counters.

Nothing on the hot path touches prometheus-client: actors, the store and the
front door bump plain ints (``ActorStatistics``, ``Store`` histograms,
``RequestCounts``), and one custom collector turns a snapshot of them into
metric families when Prometheus scrapes. A number added or removed by a live
reload appears or disappears with the next scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from quart import Response, request
from quart_trio import QuartTrio

from actors.number import NumberActor
from dispatcher.core.buckets import Buckets
from dispatcher.core.histogram import HistogramSnapshot

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@final
class RequestCounts:
    """Front-door requests by (method, route template, status): bounded label sets."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}

    def install(self, app: QuartTrio) -> None:
        @app.after_request
        async def count_request(response: Response) -> Response:
            rule = request.url_rule
            # The route template, never the raw path: sids and numbers must not become labels.
            route = rule.rule if rule is not None else "unmatched"
            self.count(request.method, route, response.status_code)
            return response

    def count(self, method: str, route: str, status: int) -> None:
        """One answered request; the fast lane (frontdoor/fastlane.py) counts its routes here too."""
        key = (method, route, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1


GaugeSource = Callable[[], float]


@final
class DispatcherCollector(Collector):
    """Reads the running daemon's counters; registered in a registry of its own."""

    def __init__(
        self,
        *,
        actors: Callable[[], Iterable[NumberActor]],
        buckets: Buckets,
        requests: RequestCounts,
        restarts: Callable[[str], int] | None = None,
    ) -> None:
        self._actors = actors
        self._restarts = restarts
        self._buckets = buckets
        self._requests = requests
        self._extra: dict[str, tuple[str, str, GaugeSource]] = {}
        self._labelled: dict[str, tuple[str, str, Callable[[], Mapping[str, int]]]] = {}

    def add_gauge(self, name: str, documentation: str, source: GaugeSource) -> None:
        """A process-wide gauge read at scrape time, e.g. the callback queue depth."""
        self._extra[name] = ("gauge", documentation, source)

    def add_counter(self, name: str, documentation: str, source: GaugeSource) -> None:
        """A process-wide counter (a plain int somewhere) read at scrape time; ``name`` without _total."""
        self._extra[name] = ("counter", documentation, source)

    def add_labelled_counter(
        self, name: str, documentation: str, label: str, source: Callable[[], Mapping[str, int]]
    ) -> None:
        """A process-wide counter per value of one label (a dict of plain ints, bounded keys)."""
        self._labelled[name] = (documentation, label, source)

    def collect(self) -> Iterator[Metric]:
        yield from self._per_number()
        yield from self._process()

    def _per_number(self) -> Iterator[Metric]:
        labels = ["number"]
        accepted = CounterMetricFamily(
            "wadispatch_messages_accepted", "Messages accepted into the outbox.", labels=labels
        )
        sent = CounterMetricFamily("wadispatch_messages_sent", "Messages WhatsApp accepted.", labels=labels)
        delivered = CounterMetricFamily(
            "wadispatch_messages_delivered", "Delivered status webhooks applied.", labels=labels
        )
        read = CounterMetricFamily("wadispatch_messages_read", "Read status webhooks applied.", labels=labels)
        failed = CounterMetricFamily(
            "wadispatch_messages_failed",
            "Messages that failed for good, by Twilio error code.",
            labels=["number", "error_code"],
        )
        limited = CounterMetricFamily(
            "wadispatch_rate_limited", "Sends answered 429 (throttled) by WhatsApp.", labels=labels
        )
        retries = CounterMetricFamily("wadispatch_send_retries", "Sends retried.", labels=labels)
        ambiguous = CounterMetricFamily(
            "wadispatch_ambiguous_sends",
            "Sends whose response was lost after the request was written.",
            labels=labels,
        )
        refreshes = CounterMetricFamily(
            "wadispatch_token_refreshes", "Logins that replaced the API token.", labels=labels
        )
        expiry = GaugeMetricFamily(
            "wadispatch_token_expiry_seconds", "Seconds until the number's API token expires.", labels=labels
        )
        outbox = GaugeMetricFamily(
            "wadispatch_outbox_depth", "Messages waiting in the number's durable outbox.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "wadispatch_in_flight", "Sends to WhatsApp awaiting a response.", labels=labels
        )
        up = GaugeMetricFamily(
            "wadispatch_number_running", "1 if the number's actor runs and is not paused.", labels=labels
        )
        degraded = GaugeMetricFamily(
            "wadispatch_number_degraded",
            "1 if the number is degraded (crash loop, revoked credentials...).",
            labels=labels,
        )
        send_rate = GaugeMetricFamily(
            "wadispatch_send_rate",
            "Sends per second in force (below the configured rate while slowed down by 429s).",
            labels=labels,
        )
        configured = GaugeMetricFamily(
            "wadispatch_rate_limit", "Configured sends per second (the token bucket's rate).", labels=labels
        )
        restarts = CounterMetricFamily(
            "wadispatch_actor_restarts", "Actor restarts after a crash.", labels=labels
        )
        pair_limited = CounterMetricFamily(
            "wadispatch_pair_rate_limited", "Sends answered 131056 (pair rate) by WhatsApp.", labels=labels
        )
        parked = GaugeMetricFamily(
            "wadispatch_parked_recipients",
            "Recipients waiting for their pair rate or the messaging-tier budget.",
            labels=labels,
        )
        tier_used = GaugeMetricFamily(
            "wadispatch_tier_recipients_used",
            "Business-initiated recipients counted in the last 24 h.",
            labels=labels,
        )
        tier_limit = GaugeMetricFamily(
            "wadispatch_tier_recipients_limit",
            "The number's messaging-tier limit, when it has one.",
            labels=labels,
        )
        tier_waits = CounterMetricFamily(
            "wadispatch_tier_budget_waits", "Times a new recipient waited for the tier budget.", labels=labels
        )
        storage = GaugeMetricFamily(
            "wadispatch_number_storage_failing",
            "1 while storage cannot record the number's send outcomes (it starts no new send).",
            labels=labels,
        )
        unrecorded = GaugeMetricFamily(
            "wadispatch_unrecorded_outcomes",
            "Outcomes of sends (answers received) waiting for storage to record them.",
            labels=labels,
        )
        storage_failures = CounterMetricFamily(
            "wadispatch_outcome_write_failures",
            "Writes of the number's send outcomes that storage could not commit (each retried).",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "wadispatch_send_latency_seconds",
            "Time from writing a send to WhatsApp to its full response.",
            labels=labels,
        )
        for actor in self._actors():
            stats = actor.statistics()
            n = [stats.number]
            accepted.add_metric(n, stats.accepted)
            sent.add_metric(n, stats.sent)
            delivered.add_metric(n, stats.delivered)
            read.add_metric(n, stats.read)
            for code, count in stats.failed_by_code:
                failed.add_metric([stats.number, str(code)], count)
            limited.add_metric(n, stats.rate_limited)
            retries.add_metric(n, stats.retries)
            ambiguous.add_metric(n, stats.ambiguous)
            refreshes.add_metric(n, stats.token_refreshes)
            if stats.token_expires_in is not None:
                expiry.add_metric(n, stats.token_expires_in)
            outbox.add_metric(n, stats.pending)  # the durable count, kept with the outbox (O(1))
            in_flight.add_metric(n, stats.in_flight)
            up.add_metric(n, 1.0 if stats.running and not stats.paused else 0.0)
            degraded.add_metric(n, 0.0 if stats.degraded is None else 1.0)
            send_rate.add_metric(n, stats.send_rate)
            if stats.send_latency is not None:
                _add_histogram(latency, n, stats.send_latency)
            configured.add_metric(n, stats.rate)
            if self._restarts is not None:
                restarts.add_metric(n, self._restarts(stats.number))
            pair_limited.add_metric(n, stats.pair_limited)
            parked.add_metric(n, stats.parked)
            tier_used.add_metric(n, stats.tier_used)
            if stats.tier_limit is not None:
                tier_limit.add_metric(n, stats.tier_limit)
            tier_waits.add_metric(n, stats.tier_waits)
            storage.add_metric(n, 0.0 if stats.storage is None else 1.0)
            unrecorded.add_metric(n, stats.unrecorded)
            storage_failures.add_metric(n, stats.storage_failures)
        yield from (accepted, sent, delivered, read, failed, limited, retries, ambiguous, refreshes)
        yield from (expiry, outbox, in_flight, up, degraded, send_rate, latency, configured)
        if self._restarts is not None:
            yield restarts
        yield from (pair_limited, parked, tier_used, tier_limit, tier_waits)
        yield from (storage, unrecorded, storage_failures)

    def _process(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "wadispatch_http_requests",
            "Front-door requests by method, route and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(self._requests.counts.items()):
            requests.add_metric([method, route, status], count)
        yield requests
        yield from self._buckets_metrics()
        for name, (kind, documentation, source) in sorted(self._extra.items()):
            family: GaugeMetricFamily | CounterMetricFamily = (
                GaugeMetricFamily(name, documentation)
                if kind == "gauge"
                else CounterMetricFamily(name, documentation)
            )
            family.add_metric([], source())
            yield family
        for name, (documentation, label, counts) in sorted(self._labelled.items()):
            counter = CounterMetricFamily(name, documentation, labels=[label])
            for value, count in sorted(counts().items()):
                counter.add_metric([value], count)
            yield counter

    def _buckets_metrics(self) -> Iterator[Metric]:
        """Each bucket's LMDB writer, labelled by bucket."""
        label = ["bucket"]
        batch = HistogramMetricFamily(
            "wadispatch_store_commit_batch_size", "Writes per LMDB group commit.", labels=label
        )
        seconds = HistogramMetricFamily(
            "wadispatch_store_commit_seconds", "LMDB group commit time, begin to fsync.", labels=label
        )
        queued = GaugeMetricFamily(
            "wadispatch_store_queued_writes", "Writes waiting for the next commit.", labels=label
        )
        failed = CounterMetricFamily(
            "wadispatch_store_failed_commits",
            "Group commits that failed (map or disk full, I/O error).",
            labels=label,
        )
        failing = GaugeMetricFamily(
            "wadispatch_store_failing", "1 while the last group commit failed.", labels=label
        )
        for index, store in enumerate(self._buckets.stores):
            bucket = [str(index)]
            _add_histogram(batch, bucket, store.batch_sizes.snapshot())
            _add_histogram(seconds, bucket, store.commit_seconds.snapshot())
            stats = store.statistics()
            queued.add_metric(bucket, stats.queued)
            failed.add_metric(bucket, stats.failed_commits)
            failing.add_metric(bucket, 1.0 if stats.failing else 0.0)
        yield from (batch, seconds, queued, failed, failing)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], snap: HistogramSnapshot) -> None:
    buckets = [("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in snap.buckets]
    family.add_metric(labels, buckets, snap.total)


@final
class Metrics:
    """The registry /metrics renders; ``render`` runs the collector once per scrape."""

    def __init__(self, collector: DispatcherCollector) -> None:
        self.collector = collector
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)

    def add(self, collector: Collector) -> None:
        """Another collector read at each scrape (e.g. the numbers' standing at Meta)."""
        self._registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self._registry)
