"""Cloud API webhooks at the app's one callback URL, ``/webhooks/cloud``: each change to its number's owner.

Meta's app dashboard takes one callback URL for all of an app's numbers (a number may override it
with its own, ``/webhooks/cloud/{digits}``: ``cloud_routes``, unchanged). One delivery may then
carry changes for several numbers, in different buckets owned by different daemons:

- ``GET``, the handshake: the verify token of any Cloud number known here is taken (the app has
  one callback for all its numbers; every token is ours, and the handshake only echoes a
  challenge). Compared in constant time with each.
- ``POST``: ``X-Hub-Signature-256`` is checked before the body is read as JSON, against the app
  secrets of the Cloud numbers known here (one HMAC per distinct secret, usually one): missing
  401, none verifies 403; nothing applied. A change is applied only for the number its
  ``metadata.phone_number_id`` names, and only if that number's app secret is one that verified
  the body (another app's number is noted ``unverified``, an unknown id ``unknown_number``).
  A change of another field (template, account updates) names a WABA, not a number: it goes with
  the first verified number of that WABA (``waba = ...``), as if it came by that number's URL.
- The numbers are grouped by bucket. Buckets served here are applied here (``CloudWebhooks.apply``:
  deduplicated, one write per number); every other owner gets the whole raw body with its
  signature, ``PART_HEADER`` naming its buckets and ``HOP_HEADER`` (over its lane, as a forwarded
  request goes: ``PeerPool``): it checks the signature itself,
  applies those buckets' numbers only (a bucket it does not serve now: 503, nothing applied) and
  answers which numbers it applied, so a number it does not know is not silently dropped.
- 200 to Meta only once every part is applied. A bucket without an owner, an owner that did not
  answer, or a store failure: 503 with ``Retry-After``. Meta redelivers the whole delivery; what
  was applied before is skipped then (``dispatcher.webhooks.dedup``), the rest applied once.
- What names no number of ours is logged and counted once, by the daemon Meta called, never a
  reason to refuse the rest (a redelivery would carry it again).
"""

from __future__ import annotations

import functools
from typing import Final, final

import attrs
import msgspec
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio

from actors.transport import TransportError
from dispatcher.channels import cloud_webhook
from dispatcher.channels.cloud_webhook import ByNumber, Decoded, FieldChange
from dispatcher.channels.webhook_items import WebhookError
from dispatcher.core import secretpolicy
from dispatcher.core.buckets import Buckets
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.events import Unapplied, WebhookEvents
from dispatcher.core.store import StoreError
from dispatcher.frontdoor.cloud_routes import SIGNATURE_HEADER, CloudWebhooks, signature_ok
from dispatcher.frontdoor.cluster_lists import Peers
from dispatcher.frontdoor.forwarding import HOP_HEADER, Headers
from dispatcher.ops import bucket_parts
from dispatcher.ops.bucket_parts import names
from dispatcher.ops.cluster import OwnerTable
from dispatcher.ops.metrics import DispatcherCollector
from dispatcher.ownership.interface import Owner

log = structlog.get_logger()

PATH: Final = "/webhooks/cloud"
PART_HEADER: Final = "x-wadispatch-cloud-buckets"
ASK_TIMEOUT: Final = 15.0  # an owner's part: past it, the delivery is answered 503 and redelivered


class PartAnswer(msgspec.Struct):
    """An owner's answer to a part: the numbers whose changes it applied."""

    numbers: list[str]


_part_encoder: Final = msgspec.json.Encoder()
_part_decoder: Final = msgspec.json.Decoder(PartAnswer)


@attrs.frozen
class Answer:
    """What the route answers: status, JSON body, and ``Retry-After`` for a 503."""

    status: int
    body: bytes
    retry_after: int | None = None


@attrs.define
class CloudAppStatistics:
    """What became of app-level deliveries' parts (on /metrics: ``add_metrics``)."""

    applied_here: int = 0  # buckets of a delivery applied by this daemon (Meta's or another's part)
    asked: int = 0  # parts another owner applied for a delivery Meta posted here
    failed: int = 0  # parts not applied: the owner did not answer, refused, or the store failed
    unowned: int = 0  # buckets a delivery named while they had no owner (answered 503)


def add_metrics(collector: DispatcherCollector, stats: CloudAppStatistics) -> None:
    """The app-level webhook's counters on /metrics."""
    for name, doc in (
        ("applied_here", "Buckets of app-level Cloud webhook deliveries applied by this daemon."),
        (
            "asked",
            "Parts of app-level Cloud webhook deliveries applied by the bucket's owner, asked from here.",
        ),
        ("failed", "Parts of app-level Cloud webhook deliveries not applied (503: Meta redelivers)."),
        ("unowned", "Buckets app-level Cloud webhook deliveries named while they had no owner (503)."),
    ):
        collector.add_counter(f"wadispatch_cloud_app_{name}", doc, functools.partial(getattr, stats, name))


@attrs.frozen
class _Part:
    """One number's changes in a delivery."""

    info: NumberInfo
    decoded: Decoded


@attrs.frozen
class _Plan:
    """A verified delivery by bucket, and what it names no number of ours by."""

    buckets: dict[int, list[_Part]]
    unapplied: list[Unapplied]


_EMPTY: Final = WebhookEvents(statuses=[], inbound=[], errors=[], ignored=0, unapplied=[])


def _error(status: int, message: str, retry_after: int | None = None) -> Answer:
    return Answer(status, _part_encoder.encode({"error": message}), retry_after)


@final
class CloudAppWebhook:
    """The app-level Cloud webhook (see the module's docstring)."""

    def __init__(
        self,
        *,
        directory: Directory,
        buckets: Buckets,
        hooks: CloudWebhooks,
        owners: OwnerTable,
        pool: Peers,
        timeout: float = ASK_TIMEOUT,
        retry_after: int = 1,
    ) -> None:
        """``owners``: who owns each bucket (a bucket ``buckets`` serves is applied here)."""
        self._directory = directory
        self._buckets = buckets
        self._hooks = hooks
        self._owners = owners
        self._pool = pool
        self._timeout = timeout
        self._retry_after = retry_after
        self.statistics = CloudAppStatistics()

    def verify(self, mode: str | None, token: str, challenge: str) -> bool:
        """The handshake: ``hub.mode=subscribe`` with any Cloud number's verify token, and a challenge."""
        if mode != "subscribe" or not challenge or not token:
            return False
        matched = False
        for known in self._directory.cloud_verify_tokens():  # every one compared: no early exit
            matched |= secretpolicy.matches(token, known)
        return matched

    async def deliver(self, body: bytes, signature: str | None, part: str | None) -> Answer:
        """Apply a delivery; ``part``: another daemon's ``PART_HEADER`` (apply those buckets only)."""
        if signature is None:
            return _error(401, f"missing {SIGNATURE_HEADER}")
        verified = {s for s in self._directory.cloud_app_secrets() if signature_ok(s, body, signature)}
        if not verified:
            return _error(403, "bad signature")
        try:
            split = cloud_webhook.decode_by_number(body)
        except WebhookError as exc:
            log.warning("webhook.malformed", route="app", error=str(exc)[:200])
            return Answer(400, _part_encoder.encode({"error": "malformed webhook", "detail": str(exc)[:500]}))
        plan = self._plan(split, verified)
        if part is not None:
            return await self._apply_part(plan, part)
        if plan.unapplied:
            self._hooks.report(plan.unapplied)
        return await self._apply_all(plan, body, signature)

    # -- what goes where ---------------------------------------------------------------------

    def _plan(self, split: ByNumber, verified: set[str]) -> _Plan:
        unapplied = list(split.unapplied)
        by_number: dict[str, _Part] = {}
        for pnid, decoded in split.numbers.items():
            info = self._directory.by_phone_number_id(pnid)
            where = split.where[pnid]
            if info is None or info.cloud is None:
                unapplied.append(
                    Unapplied("unknown_number", where, f"phone_number_id {pnid[:40]!r} is no number of ours")
                )
            elif info.cloud.app_secret not in verified:
                # Signed by another app than this number's: not its delivery to make.
                unapplied.append(
                    Unapplied("unverified", where, f"{info.number}: its app secret does not sign it")
                )
            else:
                by_number[info.number] = _Part(info, decoded)
        fields: dict[str, list[FieldChange]] = {}
        for change in split.fields:
            receiver = self._receiver(change.waba_id, verified)
            if receiver is None:
                unapplied.append(
                    Unapplied("unknown_waba", change.where, f"{change.field} of WABA {change.waba_id[:40]!r}")
                )
                continue
            fields.setdefault(receiver.number, []).append(change)
            if receiver.number not in by_number:
                by_number[receiver.number] = _Part(receiver, Decoded(_EMPTY, [], []))
        buckets: dict[int, list[_Part]] = {}
        for number, found in by_number.items():
            if number in fields:
                found = _Part(found.info, attrs.evolve(found.decoded, fields=fields[number]))
            buckets.setdefault(self._buckets.index(number), []).append(found)
        return _Plan(buckets, unapplied)

    def _receiver(self, waba: str, verified: set[str]) -> NumberInfo | None:
        """The number a WABA's field change is applied as having come by: its first verified one."""
        for info in self._directory.cloud_numbers():
            if info.waba == waba and info.cloud is not None and info.cloud.app_secret in verified:
                return info
        return None

    # -- applied here ----------------------------------------------------------------------------

    async def _apply_here(self, parts: list[_Part]) -> bool:
        """Every number's changes of one bucket served here; False if the store failed."""
        for found in parts:
            try:
                await self._hooks.apply(found.info, found.decoded)
            except StoreError as exc:
                log.error("webhook.store_failed", number=found.info.number, error=str(exc))
                self.statistics.failed += 1
                return False
        self.statistics.applied_here += 1
        return True

    async def _apply_part(self, plan: _Plan, header: str) -> Answer:
        """Another daemon's part: the buckets it names, all served here, or nothing applied."""
        wanted = bucket_parts.parse(header, self._buckets.count)
        if wanted is None:
            return _error(400, f"invalid {PART_HEADER} header {header[:80]!r}: bucket indexes expected")
        moved = [i for i in wanted if not self._buckets.is_local(i)]
        if moved:
            return _error(
                503, f"bucket(s) {names(moved)} are not served by this daemon now", self._retry_after
            )
        applied: list[str] = []
        for bucket in wanted:
            parts = plan.buckets.get(bucket, [])
            if not await self._apply_here(parts):
                return _error(503, "temporarily unavailable", self._retry_after)
            applied += [found.info.number for found in parts]
        return Answer(200, _part_encoder.encode(PartAnswer(applied)))

    # -- Meta's delivery: every bucket, here or at its owner ------------------------------------

    async def _apply_all(self, plan: _Plan, body: bytes, signature: str) -> Answer:
        placed = bucket_parts.place(sorted(plan.buckets), self._buckets.is_local, self._owners)
        failed: list[int] = []

        async def here(bucket: int) -> None:
            if not await self._apply_here(plan.buckets[bucket]):
                failed.append(bucket)

        async def there(owner: Owner, buckets: list[int]) -> None:
            expected = {found.info.number for b in buckets for found in plan.buckets[b]}
            if await self._ask(owner, buckets, expected, body, signature):
                self.statistics.asked += 1
            else:
                self.statistics.failed += 1
                failed.extend(buckets)

        async with trio.open_nursery() as nursery:
            for bucket in placed.local:
                nursery.start_soon(here, bucket)
            for owner, buckets in placed.remote:
                nursery.start_soon(there, owner, buckets)
        if placed.unowned or failed:
            unowned = placed.unowned
            self.statistics.unowned += len(unowned)
            log.warning("webhook.partly_applied", route="app", unowned=unowned, failed=sorted(failed))
            message = (
                f"bucket(s) {names(sorted(unowned + failed))} could not be applied now (no owner, or it "
                "did not answer); the rest was. Redeliver: what was applied is skipped."
            )
            return _error(503, message, self._retry_after)
        return Answer(200, b"{}")

    async def _ask(
        self, owner: Owner, buckets: list[int], expected: set[str], body: bytes, signature: str
    ) -> bool:
        """``owner`` applies its ``buckets`` of the delivery; True once it says it applied every
        number of ``expected`` (those this daemon knows there)."""
        headers: Headers = [
            (b"content-type", b"application/json"),
            (SIGNATURE_HEADER.lower().encode(), signature.encode("latin-1")),
            (HOP_HEADER, self._owners.owner_id.encode()),
            (PART_HEADER.encode(), ",".join(map(str, buckets)).encode()),
        ]
        try:
            with trio.fail_after(self._timeout):
                answer = await self._pool.request(owner.peer, b"POST", PATH.encode(), headers, body)
            if answer.status != 200:
                raise RuntimeError(f"it answered HTTP {answer.status}: {answer.body[:200]!r}")
            missing = expected - set(_part_decoder.decode(answer.body).numbers)
            if missing:
                raise RuntimeError(f"it does not know {sorted(missing)}")
        except (TransportError, trio.TooSlowError, msgspec.DecodeError, RuntimeError) as exc:
            log.warning(
                "webhook.part_failed",
                owner=owner.owner_id,
                address=owner.peer,
                buckets=buckets,
                error=repr(exc)[:300],
            )
            return False
        return True


def install(app: QuartTrio, webhook: CloudAppWebhook) -> None:
    """The app-level routes, ``GET`` and ``POST /webhooks/cloud``."""

    @app.get(PATH)
    async def cloud_app_verify() -> Response:
        args = request.args
        challenge = args.get("hub.challenge", "")
        if not webhook.verify(args.get("hub.mode"), args.get("hub.verify_token", ""), challenge):
            log.warning("webhook.verify_refused", route="app", remote=request.remote_addr)
            return Response("Forbidden", status=403, content_type="text/plain")
        log.info("webhook.verified", route="app")
        return Response(challenge, status=200, content_type="text/plain")

    @app.post(PATH)
    async def cloud_app_events() -> Response:
        body = await request.get_data(as_text=False)
        assert isinstance(body, bytes)
        signature = request.headers.get(SIGNATURE_HEADER)
        answer = await webhook.deliver(body, signature, request.headers.get(PART_HEADER))
        if answer.status in (401, 403):
            event = "webhook.unsigned" if signature is None else "webhook.bad_signature"
            log.warning(event, route="app", remote=request.remote_addr)
        response = Response(answer.body, status=answer.status, content_type="application/json")
        if answer.retry_after is not None:
            response.headers["Retry-After"] = str(answer.retry_after)
        return response
