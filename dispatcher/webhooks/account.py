"""Account webhooks applied live: Meta's word on a number's tier, throughput and standing.

The Cloud webhook route hands every authentic change of an account field here
(``channels.account_webhook`` decodes it). What it changes:

- a new messaging limit (tier) goes to the actor's ``TierBudget`` at once
  (recipients waiting on the old budget are admitted again);
- a throughput upgrade sets the actor's token bucket to the number's upgraded
  pace (``cloud.throughput_upgraded``, Meta's 1,000 messages/s by default);
- a flagged, restricted or disabled number is logged at error, shown in
  ``status`` and ``/metrics``, and paused if ``[watch] pause_on`` names the
  problem; when Meta lifts it (``UNFLAGGED``, ``REINSTATE``,
  ``ACCOUNT_RECONNECTED``) a number we paused resumes (one an operator paused
  stays paused);
- everything is kept in LMDB (``core.number_watch``), so a restart builds the
  actor with Meta's latest limits and keeps a watch pause.

Which numbers: a quality or name update names its number
(``display_phone_number``); an account or capability update is about the
WABA (``entry.id``): every number of ours in that WABA, and at least the
number whose webhook route received it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, final

import attrs
import msgspec
import structlog

from actors.number import NumberActor
from dispatcher.channels import account_webhook as aw
from dispatcher.channels.cloud import bucket_headroom
from dispatcher.core import number_watch
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.number_watch import NumberWatch

log = structlog.get_logger()

HIGH: Final = "HIGH"
STANDARD: Final = "STANDARD"
_BANNED_STATES: Final = frozenset({"DISABLE", "SCHEDULE_FOR_DISABLE"})


@attrs.frozen
class Pace:
    """A Cloud number's send rate at each of Meta's throughput levels."""

    rate: float
    burst: int
    upgraded_rate: float
    upgraded_burst: int

    def at(self, level: str | None) -> tuple[float, int]:
        return (self.upgraded_rate, self.upgraded_burst) if level == HIGH else (self.rate, self.burst)


@attrs.frozen
class WatchedNumber:
    """What the watch needs of one of our Cloud numbers."""

    number: str
    waba_id: str | None
    pace: Pace


@attrs.frozen
class Applied:
    """One account change, as applied (for the route's log and the tests)."""

    field: str
    event: str
    numbers: tuple[str, ...]


def apply_to_actor(actor: NumberActor, watch: NumberWatch, pace: Pace) -> None:
    """Set ``actor``'s limits to what Meta said (the tier, the throughput level)."""
    if watch.messaging_tier is not None and watch.messaging_tier in aw.TIERS:
        actor.set_tier_limit(aw.TIERS[watch.messaging_tier])
    elif watch.messaging_tier is not None and watch.messaging_tier.isdigit():
        actor.set_tier_limit(int(watch.messaging_tier))
    rate, burst = pace.at(watch.throughput_level)
    if actor.bucket.rate != rate or actor.bucket.burst != burst:
        actor.retune(rate, burst, headroom=bucket_headroom(rate))


@final
class AccountWatch:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        numbers: Callable[[], Iterable[WatchedNumber]],
        actor: Callable[[str], NumberActor | None],
        pause_on: Sequence[str] = (),
    ) -> None:
        """``buckets``: where each number's record is; ``numbers``: our Cloud numbers now (a reload
        or an onboarding changes them); ``actor``: a number's running actor; ``pause_on``: the
        problems that pause a number."""
        self._buckets = buckets
        self._wall = wall
        self._numbers = numbers
        self._actor = actor
        self._pause_on = frozenset(pause_on)
        self.applied: dict[str, int] = {}  # "field:event" -> count, for /metrics
        self.unapplied = 0  # account changes we could not read (logged)

    async def apply(self, receiver: str, waba_id: str, field: str, value: bytes) -> Applied | None:
        """Apply one change of account ``field`` from WABA ``waba_id``, received on ``receiver``'s
        webhook route. None if it could not be read (logged and counted, never an error)."""
        try:
            event = aw.decode(field, value)
        except ValueError as exc:
            self.unapplied += 1
            log.warning("account.unreadable", number=receiver, field=field, error=str(exc)[:300])
            return None
        name = _event_name(event)
        targets = self._targets(receiver, waba_id, event)
        now = self._wall.now()
        changed: list[tuple[WatchedNumber, NumberWatch, NumberWatch]] = []
        for target in targets:
            before = number_watch.load(self._buckets.for_number(target.number), target.number)
            after = _updated(before, event, f"{field}:{name}", now)
            if after != before:
                changed.append((target, before, after))
        for target, before, after in changed:
            after = self._steer(target, before, after, now)
            await self._buckets.for_number(target.number).write(number_watch.put(target.number, after))
            self._report(target.number, field, name, before, after, now)
        key = f"{field}:{name}"
        self.applied[key] = self.applied.get(key, 0) + 1
        return Applied(field, name, tuple(t.number for t in targets))

    def _targets(self, receiver: str, waba_id: str, event: aw.AccountEvent) -> list[WatchedNumber]:
        ours = list(self._numbers())
        if isinstance(event, aw.QualityUpdate | aw.NameUpdate):
            digits = event.display_phone_number.lstrip("+")
            return [n for n in ours if n.number.lstrip("+") == digits]
        return [n for n in ours if n.number == receiver or (n.waba_id is not None and n.waba_id == waba_id)]

    def _steer(
        self, target: WatchedNumber, before: NumberWatch, after: NumberWatch, now: float
    ) -> NumberWatch:
        """Apply ``after`` to the running actor; returns it with the watch pause noted."""
        actor = self._actor(target.number)
        problems = [p for p in after.problems(now) if p in self._pause_on]
        paused = after.paused_by_watch
        if actor is not None:
            apply_to_actor(actor, after, target.pace)
            if problems and not actor.paused:
                actor.pause()
                paused = True
                log.error("account.paused", number=target.number, problems=problems)
            elif not problems and after.paused_by_watch:
                actor.resume()
                paused = False
                log.info("account.resumed", number=target.number)
        elif problems:
            paused = True  # applied when its actor is built
        elif after.paused_by_watch:
            paused = False
        return msgspec.structs.replace(after, paused_by_watch=paused)

    def _report(
        self, number: str, field: str, event: str, before: NumberWatch, after: NumberWatch, now: float
    ) -> None:
        new_problems = sorted(set(after.problems(now)) - set(before.problems(now)))
        if new_problems:
            log.error("account.problem", number=number, field=field, meta_event=event, problems=new_problems)
        log.info(
            "account.update",
            number=number,
            field=field,
            meta_event=event,
            quality=after.quality,
            tier=after.messaging_tier,
            throughput=after.throughput_level,
            problems=after.problems(now),
        )


def _event_name(event: aw.AccountEvent) -> str:
    if isinstance(event, aw.QualityUpdate | aw.AccountUpdate):
        return event.event or "UNKNOWN"
    if isinstance(event, aw.NameUpdate):
        return event.decision or "UNKNOWN"
    return "CAPABILITY"


def _updated(watch: NumberWatch, event: aw.AccountEvent, label: str, now: float) -> NumberWatch:
    """``watch`` after ``event`` (unchanged if the event says nothing new)."""
    changes: dict[str, object] = {}
    has_limit, limit = aw.messaging_limit(event)
    if has_limit:
        changes["messaging_tier"] = aw.tier_name(limit)
    match event:
        case aw.QualityUpdate(event=name):
            if name in aw.THROUGHPUT_EVENTS:
                changes["throughput_level"] = HIGH
            elif name == "FLAGGED":
                changes["flagged"] = True
            elif name == "UNFLAGGED":
                changes["flagged"] = False
        case aw.NameUpdate(decision=decision, requested_verified_name=name):
            changes["name_decision"] = decision
            if decision == "APPROVED" and name:
                changes["verified_name"] = name
        case aw.AccountUpdate(event="ACCOUNT_RESTRICTION", restriction_info=restrictions):
            changes["restrictions"] = sorted({r.restriction_type for r in restrictions})
            ends = [float(r.expiration) for r in restrictions if r.expiration]
            changes["restricted_until"] = max(ends) if ends else None
        case aw.AccountUpdate(event="DISABLED_UPDATE", ban_info=ban) if ban is not None:
            changes["disabled"] = ban.waba_ban_state in _BANNED_STATES
            if ban.waba_ban_state == "REINSTATE":
                changes["restrictions"] = []
                changes["restricted_until"] = None
        case aw.AccountUpdate(event="ACCOUNT_DELETED" | "ACCOUNT_OFFBOARDED"):
            changes["disabled"] = True
        case aw.AccountUpdate(event="ACCOUNT_RECONNECTED"):
            changes["disabled"] = False
        case _:
            pass
    if not changes:
        return watch
    changed = msgspec.structs.replace(watch, **changes)
    if changed == watch:
        return watch
    return msgspec.structs.replace(changed, last_event=label, updated_at=now)
