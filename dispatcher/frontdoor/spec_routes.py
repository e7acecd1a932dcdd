"""Webhook routes of spec channels: ``/webhooks/channel/{kind}/{digits}[/{secret}]``.

One URL per number, as for Cloud: the channel's statuses and customers' messages come
to it. The number must be of that kind; its spec says how a delivery proves its origin
(an HMAC header over the body or over the URL and its form parameters, or the secret as
the last path segment) and how the payload reads (``channels.spec_webhook``). A delivery
that does not prove its origin is refused (401 unsigned, 403 wrong) and changes nothing;
an authentic one is applied once (the same deduplication and ``Inbox`` as Cloud's) and
answered 200 with the spec's ``ack_body``; only a store failure answers 503, so the
channel delivers again.
"""

from __future__ import annotations

import hmac
from typing import Final

import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.channels.spec_webhook import SpecWebhooks
from dispatcher.channels.webhook_items import WebhookError
from dispatcher.core.directory import Directory
from dispatcher.core.store import StoreError
from dispatcher.frontdoor.cloud_routes import CloudWebhooks

log = structlog.get_logger()

ROUTE: Final = "/webhooks/channel/<kind>/<digits>"


def _json(body: bytes, status: int) -> Response:
    return Response(body, status=status, content_type="application/json")


def install(
    app: QuartTrio,
    directory: Directory,
    hooks: CloudWebhooks,
    readers: SpecWebhooks,
    *,
    public_url: str | None = None,
) -> None:
    """The spec channels' webhook routes. ``public_url``: the daemon's URL as the channels call
    it (what signatures over the URL cover); by default the URL the request arrived at."""

    async def deliver(kind: str, digits: str, secret: str | None) -> Response:
        info = directory.by_digits(digits)
        reader = readers.get(kind)
        if info is None or info.spec is None or info.spec.kind != kind or reader is None:
            log.warning(
                "webhook.refused", channel=kind[:40], path_number=digits[:20], remote=request.remote_addr
            )
            return _json(b'{"error":"forbidden"}', 403)
        key = info.spec.key
        body = await request.get_data(as_text=False)
        assert isinstance(body, bytes)
        scheme = reader.signature.scheme
        if scheme == "path":
            if secret is None or not key or not hmac.compare_digest(secret.encode(), key.encode()):
                log.warning(
                    "webhook.bad_secret", number=info.number, channel=kind, remote=request.remote_addr
                )
                return _json(b'{"error":"forbidden"}', 403)
        elif scheme == "hmac":
            assert reader.signature.header is not None
            header = request.headers.get(reader.signature.header)
            if header is None:
                log.warning("webhook.unsigned", number=info.number, channel=kind, remote=request.remote_addr)
                return _json(b'{"error":"missing signature"}', 401)
            if not reader.authentic(key, header, body, _url(public_url)):
                log.warning(
                    "webhook.bad_signature", number=info.number, channel=kind, remote=request.remote_addr
                )
                return _json(b'{"error":"bad signature"}', 403)
        try:
            decoded = reader.decode(body)
        except WebhookError as exc:
            log.warning("webhook.malformed", number=info.number, channel=kind, error=str(exc)[:200])
            return _json(b'{"error":"malformed webhook"}', 400)
        try:
            await hooks.apply(info, decoded)
        except StoreError as exc:
            log.error("webhook.store_failed", number=info.number, channel=kind, error=str(exc))
            return _json(b'{"error":"temporarily unavailable"}', 503)
        return Response(reader.ack_body, status=200, content_type=reader.ack_content_type)

    @app.post(ROUTE)
    async def spec_events(kind: str, digits: str) -> Response:
        return await deliver(kind, digits, None)

    @app.post(ROUTE + "/<secret>")
    async def spec_events_path_secret(kind: str, digits: str, secret: str) -> Response:
        return await deliver(kind, digits, secret)


def _url(public_url: str | None) -> str:
    """The URL the channel posted to, as it signed it."""
    if public_url is None:
        return request.url
    full = request.full_path if request.query_string else request.path
    return public_url.rstrip("/") + full
