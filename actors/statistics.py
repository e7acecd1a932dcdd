"""A number actor's figures: the counters its send loop bumps, and the snapshot it gives.

The hot path only bumps plain ints (no lock, no labels, no metrics library);
``NumberActor.statistics()`` reads them, with the state of its parts, into an
``ActorStatistics`` for the admin API and /metrics at scrape time.
"""

from __future__ import annotations

import attrs

from dispatcher.core.histogram import LATENCY_BUCKETS, Histogram, HistogramSnapshot


@attrs.define(eq=False, slots=True)
class SendCounts:
    """What one number's sends came to since the process started (restarts keep counting)."""

    accepted: int = 0  # channel messages queued for this number
    sent: int = 0
    failed: int = 0  # failed by the actor (the API refused, gave up, expired)
    retries: int = 0
    ambiguous: int = 0  # sends that may or may not have reached the API (answer lost)
    rate_limited: int = 0  # 429s and Meta's rate answers, 131056 included
    pair_limited: int = 0  # Meta's 131056 answers
    lease_waits: int = 0  # sends held because the bucket's ownership lease was not renewed in time
    delivered: int = 0  # webhooks: the recipient's phone has it
    read: int = 0
    failed_by_code: dict[int, int] = attrs.field(factory=dict)  # by the actor and by webhooks
    send_latency: Histogram = attrs.field(factory=lambda: Histogram(LATENCY_BUCKETS))

    def count_failure(self, code: int) -> None:
        self.failed_by_code[code] = self.failed_by_code.get(code, 0) + 1

    def note_status(self, status: str, error_code: int | None) -> None:
        """A webhook moved one of the number's messages to ``status``."""
        if status == "delivered":
            self.delivered += 1
        elif status == "read":
            self.read += 1
        elif status in ("failed", "undelivered"):
            self.count_failure(error_code or 0)


@attrs.frozen
class ActorStatistics:
    number: str
    running: bool
    pending: int  # entries in the durable outbox
    in_flight: int
    sent: int
    failed: int
    retries: int
    ambiguous: int
    rate_limited: int
    # Operations (admin API, /metrics): see NumberActor.statistics().
    paused: bool = False
    accepted: int = 0
    delivered: int = 0
    read: int = 0
    failed_by_code: tuple[tuple[int, int], ...] = ()
    token_refreshes: int = 0
    token_expires_in: float | None = None
    rate: float = 0.0
    burst: int = 0
    send_latency: HistogramSnapshot | None = None
    send_rate: float = 0.0  # sends/s in force now: below the configured rate after 429s
    degraded: str | None = None  # why the number is degraded (crash loop, revoked token...), if it is
    pair_limited: int = 0  # Meta's 131056 answers
    parked: int = 0  # recipients waiting for their pair rate or the tier budget
    window: int = 0  # pending messages held in memory (the rest wait in the outbox)
    tier_used: int = 0  # business-initiated recipients counted in the last 24 h
    tier_limit: int | None = None  # None: no tier (On-Prem) or unlimited
    tier_waits: int = 0  # times a new recipient had to wait for the tier budget
    degraded_code: str | None = None  # the reason as a code (crash_loop, credentials): for public health
    storage: str | None = None  # storage fails: the last error (new sends wait, outcomes are held)
    unrecorded: int = 0  # outcomes of sends waiting for storage to record them
    storage_failures: int = 0  # writes of this number that storage could not commit


__all__ = ["ActorStatistics", "SendCounts"]
