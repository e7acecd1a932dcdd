"""The hot routes' logic, framework-free: one implementation for quart and the fast lane.

Each function takes the route's inputs (path values, a header lookup, the
body or a reader of it) and returns the JSON answer's bytes, or raises
``TwilioError``. The quart routes in ``app.py`` and the raw ASGI lane in
``fastlane.py`` both call these, so a rule (auth, idempotency keys, parameters,
batch limits) lives in one place. The authenticated routes take a reader and
call it only once the credentials are good: an unauthenticated client cannot
make the daemon wait for (or buffer) its body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import msgspec
import structlog

from dispatcher.channels import onprem_webhook as onprem
from dispatcher.core.directory import NumberInfo
from dispatcher.core.params import parse_body
from dispatcher.core.store import StoreError
from dispatcher.core.twilio import TwilioError, encode_message
from dispatcher.frontdoor import batch
from dispatcher.frontdoor.intake import send_request
from dispatcher.messages import idempotency
from dispatcher.messages.auth import Authenticator
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.rules import CreateRules
from dispatcher.webhooks.inbox import Inbox

log = structlog.get_logger()
_encoder = msgspec.json.Encoder()

HeaderLookup = Callable[[str], str | None]
"""Header value by name (case-insensitive), the first if repeated, or None."""

BodyReader = Callable[[], Awaitable[bytes]]
"""Reads the whole request body (bounded in size and time by the caller), or raises."""

CREATE_STATUS = 201
BATCH_STATUS = 200


def idempotency_key(header: HeaderLookup) -> str | None:
    for name in idempotency.HEADERS:
        value = header(name)
        if value is not None:
            return idempotency.check_key(value)
    return None


@final
class HotRoutes:
    """The create, batch and On-Prem webhook routes over the objects that serve them."""

    def __init__(self, *, auth: Authenticator, rules: CreateRules, gateway: Gateway, inbox: Inbox) -> None:
        self._auth = auth
        self._rules = rules
        self._gateway = gateway
        self._inbox = inbox

    async def create_message(self, account_sid: str, header: HeaderLookup, body: BodyReader) -> bytes:
        """``POST /2010-04-01/Accounts/{sid}/Messages.json``: the Message resource (201)."""
        self._auth.authenticate(header("Authorization"), account_sid)
        params = parse_body(header("Content-Type"), await body())
        record = await self._gateway.create(
            account_sid, send_request(params), idempotency_key=idempotency_key(header)
        )
        return encode_message(record)

    async def batch_messages(self, header: HeaderLookup, body: BodyReader) -> bytes:
        """``POST /v1/messages:batch``: one result per item (200)."""
        account_sid = self._auth.account_for(header("Authorization"))
        if any(header(name) is not None for name in idempotency.HEADERS):
            raise TwilioError(
                400, 20001, "Idempotency keys are per message: use the Messages.json create to send with one."
            )
        return await batch.accept_batch(self._rules, self._gateway, account_sid, batch.decode(await body()))

    async def onprem_webhook(
        self, info: NumberInfo | None, digits: str, body: bytes, remote: str | None
    ) -> tuple[int, bytes]:
        """``POST /webhooks/onprem/...``: ``(status, JSON)``. ``info`` is the number the caller's
        route authenticated (None: refused, the body need not be read); decoded fully, then
        applied atomically, so a malformed delivery changes nothing."""
        if info is None:
            log.warning("webhook.refused", path_number=digits[:20], remote=remote)
            return 403, b'{"error":"forbidden"}'
        try:
            events = onprem.decode(body)
        except onprem.WebhookError as exc:
            log.warning("webhook.malformed", number=info.number, error=str(exc)[:200])
            return 400, _encoder.encode({"error": "malformed webhook", "detail": str(exc)[:500]})
        try:
            await self._inbox.apply(info, events)
        except StoreError as exc:
            log.error("webhook.store_failed", number=info.number, error=str(exc))
            return 503, b'{"error":"unavailable"}'  # WhatsApp retries the delivery
        return 200, b"{}"
