"""Provisioning an On-Premises number's webapp: account registration, its code, webhook settings.

The calls, made through the number's own actor (its login token, its endpoints):

- ``POST /v1/account`` ``{"cc", "phone_number", "method": "sms"|"voice", "cert", "pin"?}``: register
  the number with the base64 certificate Business Manager shows for it; a code is sent (202), or it
  is registered already (201);
- ``POST /v1/account/verify`` ``{"code"}``;
- ``PATCH /v1/settings/application`` ``{"webhooks": {"url"}}``: where the webapp posts its
  webhooks (this daemon's On-Prem route for the number);
- ``GET /v1/health``: ``gateway_status`` of every node.

Confirmed: the settings call and health (reference 1.7-1.8); the account calls as Meta's On-Prem
Postman collection writes them (apidog copy). Not confirmed: which status means "code sent" (we
take 202) and the error codes; any 2xx is success, any error is shown as the webapp wrote it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import msgspec
import trio

from actors.transport import Response, TransportError

CALL_TIMEOUT: Final = 30.0  # seconds for one call, its login included
Call = Callable[[bytes, bytes, bytes], Awaitable[Response]]
"""``await call(method, target, body)``: a request to the number's webapp with its token."""


class OnPremError(Exception):
    """The webapp refused (its ``errors`` as it wrote them), or did not answer."""


@attrs.frozen
class OnPremHandle:
    """A configured On-Prem number, as its provisioning needs it."""

    number: str
    account: str
    call: Call
    webhook_url: str = attrs.field(repr=False)  # may carry the number's path secret


class _Error(msgspec.Struct):
    code: int | None = None
    title: str = ""
    details: str = ""


class _Errors(msgspec.Struct):
    errors: list[_Error] = []


class _Node(msgspec.Struct):
    gateway_status: str = ""


_errors: Final = msgspec.json.Decoder(_Errors)
_health: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_node: Final = msgspec.json.Decoder(_Node)


async def _request(handle: OnPremHandle, method: bytes, target: bytes, body: object = None) -> Response:
    payload = b"" if body is None else msgspec.json.encode(body)
    try:
        with trio.fail_after(CALL_TIMEOUT):  # the login included: a webapp refusing it never answers
            resp = await handle.call(method, target, payload)
    except TransportError as exc:
        raise OnPremError(f"no answer from the webapp: {exc}") from exc
    except trio.TooSlowError as exc:
        raise OnPremError(f"no answer from the webapp in {CALL_TIMEOUT:g} s (is its login refused?)") from exc
    if resp.status >= 400:
        raise OnPremError(_error_text(resp))
    return resp


def _error_text(resp: Response) -> str:
    try:
        found = _errors.decode(resp.body).errors
    except msgspec.DecodeError:
        found = []
    if not found:
        text = resp.body[:300].decode("utf-8", "replace").strip()
        return f"HTTP {resp.status}: {text or 'no error body'}"
    first = found[0]
    code = f" code {first.code}" if first.code is not None else ""
    details = f": {first.details}" if first.details else ""
    return f"HTTP {resp.status}{code}: {first.title or 'error'}{details}"


async def register_account(
    handle: OnPremHandle, cc: str, local: str, cert: str, method: str, pin: str | None
) -> bool:
    """``POST /v1/account``; True if a code was sent (verify next), False if already registered."""
    body: dict[str, str] = {"cc": cc, "phone_number": local, "method": method, "cert": cert}
    if pin is not None:
        body["pin"] = pin
    resp = await _request(handle, b"POST", b"/v1/account", body)
    return resp.status == 202


async def verify_account(handle: OnPremHandle, code: str) -> None:
    await _request(handle, b"POST", b"/v1/account/verify", {"code": code})


async def set_webhook(handle: OnPremHandle) -> None:
    await _request(handle, b"PATCH", b"/v1/settings/application", {"webhooks": {"url": handle.webhook_url}})


class _Hooks(msgspec.Struct):
    url: str | None = None


class _Application(msgspec.Struct):
    webhooks: _Hooks | None = None


class _Settings(msgspec.Struct):
    application: _Application | None = None


class _SettingsAnswer(msgspec.Struct):
    settings: _Settings | None = None


async def webhook_url(handle: OnPremHandle) -> str | None:
    """Where the webapp posts its webhooks now (``GET /v1/settings/application``)."""
    resp = await _request(handle, b"GET", b"/v1/settings/application")
    try:
        answer = msgspec.json.decode(resp.body, type=_SettingsAnswer)
    except msgspec.DecodeError as exc:
        raise OnPremError(f"unreadable settings answer: {exc}") from exc
    app = answer.settings.application if answer.settings else None
    return app.webhooks.url if app and app.webhooks else None


async def gateway_status(handle: OnPremHandle) -> list[str]:
    """``gateway_status`` of every node (one for a single instance; per node for HA/multiconnect)."""
    resp = await _request(handle, b"GET", b"/v1/health")
    try:
        health = _health.decode(resp.body).get("health")
        if health is None:
            return []
        single = _node.decode(health)
        if single.gateway_status:
            return [single.gateway_status]
        nodes = _health.decode(health)
        return [_node.decode(raw).gateway_status for raw in nodes.values()]
    except msgspec.DecodeError as exc:
        raise OnPremError(f"unreadable health answer: {exc}") from exc


__all__ = [
    "OnPremError",
    "OnPremHandle",
    "gateway_status",
    "register_account",
    "set_webhook",
    "verify_account",
    "webhook_url",
]
