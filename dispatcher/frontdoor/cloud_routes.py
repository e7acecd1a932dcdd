"""Cloud API webhook routes: ``GET`` verification handshake and signed ``POST`` deliveries.

Meta calls one URL per number here: ``/webhooks/cloud/{digits}`` (the number's
webhook override; the app-level callback can point at it too).

- ``GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...``: 200 with
  the bare challenge if the verify token matches (constant time), else 403.
- ``POST`` with ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body,
  keyed with the app secret>``: missing -> 401, wrong -> 403, not a Cloud
  envelope at all -> 400; in each case nothing changes. An authentic delivery
  is answered 200 once applied: decoded into channel-neutral events (what
  cannot be applied as it came is logged and counted, never a reason to refuse
  the rest: Meta would redeliver the whole batch for 7 days); events already
  applied (``dispatcher.webhooks.dedup``) are skipped, the rest go through the same
  ``Inbox.apply`` as On-Prem's, then are remembered. Changes of other
  fields (template, account updates) go to their registered handlers
  (``dispatcher.webhooks.cloud_fields``). Only a store failure answers 503,
  so Meta redelivers.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, final

import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.channels import cloud_webhook
from dispatcher.channels.onprem_webhook import WebhookError
from dispatcher.core import secretpolicy
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.events import InboundEvent, StatusEvent, Unapplied, WebhookEvents
from dispatcher.core.store import StoreError
from dispatcher.webhooks import dedup
from dispatcher.webhooks.cloud_fields import CloudFields
from dispatcher.webhooks.inbox import Inbox

log = structlog.get_logger()

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
_encoder: Final = msgspec.json.Encoder()


def signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(app_secret: str, body: bytes, header: str) -> bool:
    """An empty app secret signs nothing: anyone could compute its HMAC."""
    return bool(app_secret) and secretpolicy.matches(header.strip(), signature(app_secret, body))


def _json(body: bytes, status: int) -> Response:
    return Response(body, status=status, content_type="application/json")


@final
class CloudWebhooks:
    """Applies verified Cloud deliveries once each (durably, and while one is in progress);
    their changes of other fields go to ``fields``."""

    def __init__(self, *, buckets: Buckets, wall: WallClock, inbox: Inbox, fields: CloudFields) -> None:
        self._buckets = buckets
        self._wall = wall
        self._inbox = inbox
        self._fields = fields
        self._in_progress: set[tuple[str, str]] = set()
        self.duplicates = 0

    async def apply(self, info: NumberInfo, decoded: cloud_webhook.Decoded) -> int:
        """Apply what was not applied before; returns how many events were duplicates."""
        # The number (found by the phone_number_id in the path) names the bucket.
        store, now, scope = self._buckets.for_number(info.number), self._wall.now(), info.number
        events = decoded.events
        keys = [*decoded.status_keys, *decoded.inbound_keys]
        done = dedup.seen(store, scope, keys, now) | {k for s, k in self._in_progress if s == scope}
        fresh = [k for k in dict.fromkeys(keys) if k not in done]
        taken = {(scope, k) for k in fresh}
        self._in_progress |= taken
        try:
            # One key can also repeat inside a delivery: apply its first occurrence only.
            # (A set: a batched delivery carries hundreds of keys.)
            pending = set(fresh)
            statuses: list[StatusEvent] = []
            for update, key in zip(events.statuses, decoded.status_keys, strict=True):
                if key in pending:
                    pending.discard(key)
                    statuses.append(update)
            inbound: list[InboundEvent] = []
            for message, key in zip(events.inbound, decoded.inbound_keys, strict=True):
                if key in pending:
                    pending.discard(key)
                    inbound.append(message)
            skipped = len(keys) - len(statuses) - len(inbound)
            await self._inbox.apply(
                info,
                WebhookEvents(
                    statuses=statuses,
                    inbound=inbound,
                    errors=events.errors,
                    ignored=events.ignored,
                    unapplied=events.unapplied,
                ),
            )
            if fresh:
                await store.write(dedup.mark(scope, fresh, now))
        finally:
            self._in_progress -= taken
        self.duplicates += skipped
        await self._fields.dispatch(info, decoded.fields)
        return skipped

    def report(self, unapplied: list[Unapplied]) -> None:
        """Log and count what an app-level delivery carried for no number of ours (``cloud_app``)."""
        self._inbox.report(None, unapplied)


def install(app: QuartTrio, directory: Directory, hooks: CloudWebhooks) -> None:
    """The Cloud webhook routes: numbers looked up in ``directory``, deliveries applied by ``hooks``."""

    @app.get("/webhooks/cloud/<digits>")
    async def cloud_verify(digits: str) -> Response:
        info = directory.cloud_number(digits)
        mode = request.args.get("hub.mode")
        token = request.args.get("hub.verify_token", "")
        challenge = request.args.get("hub.challenge", "")
        if (
            info is None
            or info.cloud is None
            or mode != "subscribe"
            or not challenge
            or not secretpolicy.matches(token, info.cloud.verify_token)
        ):
            log.warning("webhook.verify_refused", path_number=digits[:20], remote=request.remote_addr)
            return Response("Forbidden", status=403, content_type="text/plain")
        log.info("webhook.verified", number=info.number)
        return Response(challenge, status=200, content_type="text/plain")

    @app.post("/webhooks/cloud/<digits>")
    async def cloud_events(digits: str) -> Response:
        info = directory.cloud_number(digits)
        if info is None or info.cloud is None:
            log.warning("webhook.refused", path_number=digits[:20], remote=request.remote_addr)
            return _json(b'{"error":"forbidden"}', 403)
        body = await request.get_data(as_text=False)
        assert isinstance(body, bytes)
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            log.warning("webhook.unsigned", number=info.number, remote=request.remote_addr)
            return _json(b'{"error":"missing X-Hub-Signature-256"}', 401)
        if not signature_ok(info.cloud.app_secret, body, header):
            log.warning("webhook.bad_signature", number=info.number, remote=request.remote_addr)
            return _json(b'{"error":"bad signature"}', 403)
        try:
            decoded = cloud_webhook.decode(body, info.cloud.phone_number_id)
        except WebhookError as exc:
            log.warning("webhook.malformed", number=info.number, error=str(exc)[:200])
            return _json(_encoder.encode({"error": "malformed webhook", "detail": str(exc)[:500]}), 400)
        try:
            await hooks.apply(info, decoded)
        except StoreError as exc:
            log.error("webhook.store_failed", number=info.number, error=str(exc))
            return _json(b'{"error":"temporarily unavailable"}', 503)
        return _json(b"{}", 200)
