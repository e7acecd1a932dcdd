"""The simulator's Cloud webhooks: signed, batched per number, in order per recipient.

How they travel (scheduled without I/O, sharded by recipient, batched, retried)
is ``hook_queue``'s, shared with the On-Prem sender. Here: Meta's envelope. A
worker's due statuses go out as one envelope per number whose
``value.statuses`` lists them all (Meta's envelope is a list there too), with
the recipients in ``value.contacts``; a customer's inbound message in its own
POST. Every attempt is signed (``X-Hub-Signature-256``) with the number's app
secret as it is then. One job per accepted message walks its stages,
re-queued at ``accepted_at + delay[stage]``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import msgspec
import trio

from actors.transport import Headers
from dispatcher.core.clock import WallClock
from dispatcher.simulator.hook_queue import HookQueue, Post, Shard, Target

SignedPoster = Callable[[str, bytes, dict[str, str]], Awaitable[int]]
"""``await poster(url, body, headers) -> HTTP status``; raising counts as a failed attempt."""

STAGES: Final = ("sent", "delivered", "read")
_encoder: Final = msgspec.json.Encoder()
_ORIGIN: Final = {"type": "utility"}
_PRICING: Final = {"billable": True, "pricing_model": "PMP", "category": "utility"}


@attrs.frozen
class Destination:
    """Where a number's webhooks go and how they are signed (looked up when posting)."""

    url: str
    app_secret: str
    waba_id: str
    metadata: dict[str, str]


Lookup = Callable[[str], Destination | None]
"""Phone number id -> its destination, or None when removed or its webhook URL unset."""
Counter = Callable[[str, bool], None]
"""Called once per POST with the phone number id and whether it was delivered."""


@final
@attrs.define(eq=False, slots=True)
class _Walk:
    """One accepted message's statuses: ``sent -> delivered -> read``, or one ``failed``."""

    pnid: str
    wamid: str
    digits: str
    failure: tuple[int, str] | None
    accepted_at: float
    stage: int = 0
    # Built at the first stage, shared by the next two (a hash each: not once per stage).
    contact: dict[str, str] | None = None
    conversation: dict[str, Any] | None = None


@final
@attrs.frozen(eq=False)
class _Value:
    """A prepared ``value`` (an inbound message, or a change of another ``field``), posted as it is."""

    pnid: str
    value: dict[str, Any]
    field: str = "messages"


@final
@attrs.frozen(eq=False)
class _Change:
    """A change of another field (``account_update``, ``phone_number_quality_update``...), posted
    as it is to where ``destination`` says then (a WABA's subscription, not a number's)."""

    destination: Callable[[], Destination | None]
    field: str
    value: dict[str, Any]


def sign(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def user_id(digits: str) -> str:
    """A stable business-scoped user id for a customer (``US.<digits>``), as Meta adds since 2026."""
    return "US." + str(int(hashlib.sha256(digits.encode()).hexdigest()[:16], 16))


@final
class CloudHooks:
    """Schedules and posts the webhooks of every Cloud number of one simulator."""

    def __init__(
        self,
        *,
        lookup: Lookup,
        count: Counter,
        wall_clock: WallClock,
        status_delays: tuple[float, float, float] | None,
        batch: int = 1,
        concurrency: int = 1,
        retries: int = 3,
        retry_delay: float = 0.2,
        post_timeout: float = 10.0,
        poster: SignedPoster | None = None,
    ) -> None:
        self._lookup = lookup
        self._count = count
        self._wall = wall_clock
        self._delays = status_delays
        self._queue: HookQueue[_Walk | _Value | _Change] = HookQueue(
            self._deliver,
            batch=batch,
            concurrency=concurrency,
            retries=retries,
            retry_delay=retry_delay,
            post_timeout=post_timeout,
            post=None if poster is None else _with_header_dict(poster),
        )

    def push_statuses(self, pnid: str, wamid: str, digits: str, failure: tuple[int, str] | None) -> None:
        """Schedule an accepted message's statuses (``failure``: one ``failed`` with that code)."""
        if self._delays is None:
            return
        now = trio.current_time()
        self._queue.push(digits, now + self._delays[0], _Walk(pnid, wamid, digits, failure, now))

    def push_value(self, pnid: str, digits: str, value: dict[str, Any]) -> None:
        """Post ``value`` (a customer's message from ``digits``) now."""
        self._queue.push(digits, trio.current_time(), _Value(pnid, value))

    def push_change(self, pnid: str, field: str, value: dict[str, Any]) -> None:
        """Post a change of ``field`` (a template or account update: no ``metadata``) now, by the
        webhook URL of number ``pnid``, in the WABA's envelope."""
        self._queue.push(field, trio.current_time(), _Value(pnid, value, field))

    def push_waba_change(
        self, key: str, destination: Callable[[], Destination | None], field: str, value: dict[str, Any]
    ) -> None:
        """Post a change of ``field`` now to where ``destination`` says then (a WABA's subscription,
        not a number's URL), in order with the other posts under ``key``."""
        self._queue.push(key, trio.current_time(), _Change(destination, field, value))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post due webhooks until cancelled; opens pooled connections unless a poster was given."""
        await self._queue.run(task_status=task_status)

    async def _deliver(
        self, shard: Shard[_Walk | _Value | _Change], jobs: list[_Walk | _Value | _Change], post: Post
    ) -> None:
        statuses, values = self._group(shard, jobs)
        for pnid, (items, contacts) in statuses.items():
            await self._post(pnid, {"contacts": list(contacts.values()), "statuses": items}, post)
        for job in values:
            if isinstance(job, _Change):
                await self._post_change(job, post)
            else:
                await self._post(job.pnid, job.value, post, job.field)

    def _group(
        self, shard: Shard[_Walk | _Value | _Change], jobs: list[_Walk | _Value | _Change]
    ) -> tuple[dict[str, tuple[list[dict[str, Any]], dict[str, dict[str, str]]]], list[_Value | _Change]]:
        """Due statuses grouped by number (with their contacts); unfinished walks re-queued."""
        statuses: dict[str, tuple[list[dict[str, Any]], dict[str, dict[str, str]]]] = {}
        values: list[_Value | _Change] = []
        timestamp = str(int(self._wall.now()))
        for job in jobs:
            if not isinstance(job, _Walk):
                values.append(job)
                continue
            items, contacts = statuses.setdefault(job.pnid, ([], {}))
            items.append(_status(job, timestamp))
            if job.contact is None:
                job.contact = {"wa_id": job.digits, "user_id": user_id(job.digits)}
            contacts.setdefault(job.digits, job.contact)
            if job.failure is None and job.stage + 1 < len(STAGES):
                assert self._delays is not None  # walks exist only when statuses are on
                job.stage += 1
                self._queue.again(shard, job.accepted_at + self._delays[job.stage], job)
        return statuses, values

    async def _post(self, pnid: str, value: dict[str, Any], post: Post, field: str = "messages") -> None:
        """Wrap ``value`` in the number's envelope, sign it and POST it (retried by the queue)."""

        def target() -> Target | None:
            destination = self._lookup(pnid)
            if destination is None:
                return None  # number removed or webhook unset since: nowhere to deliver
            if field != "messages":
                return self._change_target(destination, field, value)
            wrapped = {"messaging_product": "whatsapp", "metadata": destination.metadata, **value}
            entry = {"id": destination.waba_id, "changes": [{"field": "messages", "value": wrapped}]}
            return _signed(destination, {"object": "whatsapp_business_account", "entry": [entry]})

        delivered = await self._queue.post(pnid, target, post)
        if delivered is not None:
            self._count(pnid, delivered)

    async def _post_change(self, job: _Change, post: Post) -> None:
        """A change of another field, to its WABA's subscription as it is then."""

        def target() -> Target | None:
            destination = job.destination()
            return None if destination is None else self._change_target(destination, job.field, job.value)

        await self._queue.post(job.field, target, post)

    def _change_target(self, destination: Destination, field: str, value: dict[str, Any]) -> Target:
        """A WABA's change of ``field``: Meta stamps its time and names no number."""
        entry = {
            "id": destination.waba_id,
            "time": int(self._wall.now()),
            "changes": [{"field": field, "value": value}],
        }
        return _signed(destination, {"object": "whatsapp_business_account", "entry": [entry]})


def _signed(destination: Destination, envelope: dict[str, Any]) -> Target:
    """``envelope`` encoded and signed with the destination's app secret (``X-Hub-Signature-256``)."""
    body = _encoder.encode(envelope)
    signature = sign(destination.app_secret, body).encode("latin-1")
    return Target(destination.url, body, [(b"x-hub-signature-256", signature)])


def _with_header_dict(poster: SignedPoster) -> Post:
    """A given ``poster(url, body, headers)`` as the queue's ``Post``: the headers as a dict."""

    async def post(url: str, body: bytes, headers: Headers) -> int:
        extra = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        return await poster(url, body, {"content-type": "application/json", **extra})

    return post


def _status(walk: _Walk, timestamp: str) -> dict[str, Any]:
    if walk.failure is not None:
        code, title = walk.failure
        return {
            "id": walk.wamid,
            "status": "failed",
            "timestamp": timestamp,
            "recipient_id": walk.digits,
            "errors": [{"code": code, "title": title, "message": title, "error_data": {"details": title}}],
        }
    if walk.conversation is None:
        walk.conversation = {"id": hashlib.md5(walk.digits.encode()).hexdigest(), "origin": _ORIGIN}
    return {
        "id": walk.wamid,
        "status": STAGES[walk.stage],
        "timestamp": timestamp,
        "recipient_id": walk.digits,
        "conversation": walk.conversation,
        "pricing": _PRICING,
    }
