"""Injected faults: what a real WhatsApp endpoint does on a bad day, per number or per endpoint.

A ``FaultPlan`` says what goes wrong (latency, 5xx, refused/reset connections,
a request accepted but its answer lost, 429s, webhooks delayed, duplicated or
reordered). Plans are set per number (``"15550000001"``) or per endpoint of a
multiconnect set (``"15550000001~1"``; an endpoint plan replaces the number's).

``script`` makes a test exact: the listed faults hit the next message sends in
order, before any rate applies. Rates draw from one seeded RNG, so a run with
the same seed and the same request order injects the same faults.

The core decides (``Faults.decide``); the adapters act: the in-process
transport raises the matching ``TransportError``; the h11 server aborts the TCP
connection (a client that already wrote its request cannot tell a refusal
from a reset there, so both read as "response lost" over real sockets).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Annotated, Final, Literal, final

import attrs
import msgspec

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)]
FaultKind = Literal[
    "error_500", "error_502", "error_503", "refuse", "reset", "drop", "throttle", "unauthorized"
]
MESSAGES_PATH: Final = "/v1/messages"


class FaultPlan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What goes wrong for one number or endpoint. Rates are per ``POST /v1/messages``."""

    latency: Seconds = 0.0
    """Added before every answer (any request), plus ``uniform(0, jitter)``."""
    jitter: Seconds = 0.0
    error_rate: Fraction = 0.0
    """Answered with ``error_status`` and an On-Prem 1014 error body; nothing sent."""
    error_status: Literal[500, 502, 503] = 503
    refuse_rate: Fraction = 0.0
    """Connection refused: the request never reaches the API."""
    reset_rate: Fraction = 0.0
    """Connection reset before the API acted: nothing sent, but the client cannot know."""
    drop_rate: Fraction = 0.0
    """The message is accepted (and will be delivered), then the answer is lost: a true ambiguous send."""
    throttle_rate: Fraction = 0.0
    """HTTP 429 (code 1015), with ``Retry-After: retry_after`` when that is set."""
    retry_after: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] | None = None
    down: bool = False
    """Every request (login included) is refused: an endpoint that is off."""
    script: list[FaultKind] = []
    """Faults for the next message sends, in order, before the rates apply."""
    webhook_delay: Seconds = 0.0
    """Status webhooks are posted this much later."""
    webhook_duplicate_rate: Fraction = 0.0
    """A webhook POST is sent twice."""
    webhook_reorder_rate: Fraction = 0.0
    """A webhook POST is held back and sent after the number's next one."""


Action = Literal["refuse", "reset", "drop", "error", "throttle", "unauthorized"]


@attrs.frozen
class Decision:
    """What to do to one request: wait ``delay``, then ``action`` (None: answer normally)."""

    delay: float
    action: Action | None
    status: int = 0
    retry_after: float | None = None


class InjectedFault(Exception):
    """Raised by the core for a fault the adapter must act out on its connection."""


class Refused(InjectedFault):
    """The request never reached the API."""


class Reset(InjectedFault):
    """The connection died before the API acted on the request."""


class ResponseDropped(InjectedFault):
    """The API acted on the request; its answer is lost."""


_KIND_ACTION: Final[dict[str, tuple[Action, int]]] = {
    "error_500": ("error", 500),
    "error_502": ("error", 502),
    "error_503": ("error", 503),
    "refuse": ("refuse", 0),
    "reset": ("reset", 0),
    "drop": ("drop", 0),
    "throttle": ("throttle", 429),
    "unauthorized": ("unauthorized", 401),
}
_NO_FAULT: Final = Decision(0.0, None)
_decode_plan = msgspec.json.Decoder(FaultPlan).decode


def decode_plan(body: bytes) -> FaultPlan:
    """A plan from JSON; raises msgspec.ValidationError/DecodeError naming the field."""
    return _decode_plan(body or b"{}")


@final
class Faults:
    """Every plan of one simulator, its scripts, and what was injected (by key and kind)."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._plans: dict[str, FaultPlan] = {}
        self._scripts: dict[str, deque[FaultKind]] = {}
        self._rng = random.Random(seed)
        self.injected: dict[str, dict[str, int]] = {}

    def __bool__(self) -> bool:
        return bool(self._plans)

    def set(self, key: str, plan: FaultPlan) -> None:
        """Apply ``plan`` to ``key`` (``digits`` or ``digits~k``); its script starts afresh."""
        plan = msgspec.convert(msgspec.structs.asdict(plan), FaultPlan)  # check the constraints
        self._plans[key] = plan
        self._scripts[key] = deque(plan.script)

    def clear(self, key: str | None = None) -> None:
        """Drop the plan of ``key`` (every plan if None)."""
        if key is None:
            self._plans.clear()
            self._scripts.clear()
        else:
            self._plans.pop(key, None)
            self._scripts.pop(key, None)

    def plans(self) -> dict[str, FaultPlan]:
        return dict(self._plans)

    def plan_for(self, digits: str, endpoint: str | None) -> tuple[str, FaultPlan] | None:
        """The plan that applies to ``digits`` at ``endpoint`` (its own first, then the number's)."""
        if endpoint is not None:
            key = f"{digits}~{endpoint}"
            plan = self._plans.get(key)
            if plan is not None:
                return key, plan
        plan = self._plans.get(digits)
        return None if plan is None else (digits, plan)

    def decide(
        self, digits: str, endpoint: str | None, method: str, path: str, *, sends: bool | None = None
    ) -> Decision:
        """The fault for one request below a number's prefix; ``sends``: it is a message send
        (default: ``POST /v1/messages``, the On-Prem API's; a spec channel's number says)."""
        found = self.plan_for(digits, endpoint)
        if found is None:
            return _NO_FAULT
        key, plan = found
        delay = plan.latency + (self._rng.uniform(0.0, plan.jitter) if plan.jitter else 0.0)
        if plan.down:
            return self._count(key, "refuse", Decision(delay, "refuse"))
        if not (sends if sends is not None else method == "POST" and path == MESSAGES_PATH):
            return Decision(delay, None)
        script = self._scripts.get(key)
        if script:
            kind = script.popleft()
            action, status = _KIND_ACTION[kind]
            return self._count(key, kind, Decision(delay, action, status, plan.retry_after))
        draw = self._rng.random()
        rates: tuple[tuple[float, str, Action, int], ...] = (
            (plan.refuse_rate, "refuse", "refuse", 0),
            (plan.reset_rate, "reset", "reset", 0),
            (plan.drop_rate, "drop", "drop", 0),
            (plan.error_rate, f"error_{plan.error_status}", "error", plan.error_status),
            (plan.throttle_rate, "throttle", "throttle", 429),
        )
        for rate, name, action, status in rates:
            if draw < rate:
                return self._count(key, name, Decision(delay, action, status, plan.retry_after))
            draw -= rate
        return Decision(delay, None)

    def webhook_plan(self, digits: str) -> FaultPlan | None:
        """Webhook faults are per number (webhooks do not go through an endpoint)."""
        return self._plans.get(digits)

    def chance(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate

    def count(self, key: str, kind: str) -> None:
        by_kind = self.injected.setdefault(key, {})
        by_kind[kind] = by_kind.get(kind, 0) + 1

    def _count(self, key: str, kind: str, decision: Decision) -> Decision:
        self.count(key, kind)
        return decision


def split_prefix(prefix: str) -> tuple[str, str | None]:
    """``"15550000001~2"`` -> ``("15550000001", "2")``; a plain prefix has no endpoint label."""
    digits, sep, endpoint = prefix.partition("~")
    return digits, (endpoint if sep else None)
