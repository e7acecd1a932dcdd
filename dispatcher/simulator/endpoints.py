"""The On-Premises endpoints below a number's prefix (``/v1/...``), as sync handlers.

Handlers raise ``ApiError`` for every refusal; ``NumberApi.dispatch`` turns it
into the real error response and counts 400, 401 and 429 per number. The order
of checks follows the real webapp: token (401), request rate (429), then the
body (400), so a flood of bad requests still meets the rate limit.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import final

import trio

from dispatcher.core.clock import WallClock
from dispatcher.simulator import errors
from dispatcher.simulator.auth import basic_credentials, expires_after
from dispatcher.simulator.errors import ApiError
from dispatcher.simulator.exchange import SimRequest, SimResponse, error_response, json_response
from dispatcher.simulator.ids import IdMaker
from dispatcher.simulator.messages import decode_body, parse_send
from dispatcher.simulator.onprem_account import Accounts
from dispatcher.simulator.state import NumberState
from dispatcher.simulator.webhooks import WebhookSender
from dispatcher.simulator.wire import (
    ApplicationSettings,
    ContactResult,
    ContactsResponse,
    GatewayHealth,
    HealthResponse,
    LoginResponse,
    LoginUser,
    MediaUploaded,
    MessageId,
    MetaOnly,
    SendResponse,
    Settings,
    SettingsResponse,
    WebhooksSettings,
    decode_contacts,
    decode_login,
    decode_settings,
    encode,
)

_Handler = Callable[[NumberState, SimRequest, str], SimResponse]
_OK = encode(MetaOnly())
_HEALTH = encode(HealthResponse(health=GatewayHealth()))
_TOO_MANY = ApiError(429, errors.TOO_MANY_REQUESTS, "Request rate limit reached for this number")
_MEDIA_PREFIX = "/v1/media/"


@final
class NumberApi:
    """Routes ``(method, path below the number's prefix)`` to a handler and answers."""

    def __init__(
        self,
        *,
        wall_clock: WallClock,
        webhooks: WebhookSender,
        ids: IdMaker,
        invalid_prefix: str,
        accounts: Accounts | None = None,
    ) -> None:
        """``accounts``: the numbers' registrations (``POST /v1/account``)."""
        self._wall = wall_clock
        self.accounts = accounts or Accounts()
        self._webhooks = webhooks
        self._ids = ids
        self._invalid_prefix = invalid_prefix
        self._routes: dict[tuple[str, str], _Handler] = {
            ("POST", "/v1/users/login"): self._login,
            ("POST", "/v1/users/logout"): self._logout,
            ("POST", "/v1/messages"): self._send,
            ("GET", "/v1/health"): self._health,
            ("GET", "/v1/settings/application"): self._get_settings,
            ("PATCH", "/v1/settings/application"): self._patch_settings,
            ("POST", "/v1/contacts"): self._contacts,
            ("POST", "/v1/media"): self._upload_media,
            ("POST", "/v1/account"): self._register_account,
            ("POST", "/v1/account/verify"): self._verify_account,
        }
        self._paths = {path for _, path in self._routes}

    def dispatch(self, state: NumberState, req: SimRequest, path: str) -> SimResponse:
        """Answer ``req`` for ``state``'s number; ``path`` is below the number's prefix."""
        handler = self._routes.get((req.method, path))
        arg = ""
        if handler is None:
            if path.startswith(_MEDIA_PREFIX) and req.method == "GET":
                handler, arg = self._get_media, path[len(_MEDIA_PREFIX) :]
            elif path in self._paths or path.startswith(_MEDIA_PREFIX):
                return error_response(ApiError(405, errors.INVALID_REQUEST, f"{req.method} {path}"))
            else:
                return error_response(errors.not_found(f"Unknown path {path!r}"))
        try:
            return handler(state, req, arg)
        except ApiError as exc:
            counters = state.counters
            if exc.status == 400:
                counters.rejected_400 += 1
            elif exc.status == 401:
                counters.rejected_401 += 1
            elif exc.status == 429:
                counters.rejected_429 += 1
            return error_response(exc)

    def _send(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        if not state.gate.admit(trio.current_time()):
            raise _TOO_MANY
        out = parse_send(req.body)
        msg_id = self._ids.new("gBGG")
        state.counters.accepted += 1
        state.count_recipient(out.recipient)
        state.received.append((out.recipient, out.type, out.content, msg_id))
        state.note_sender(req.headers.get("user-agent", ""), self._wall.now())
        failed = out.recipient.startswith(self._invalid_prefix)
        self._webhooks.push_status(state, msg_id, out.recipient, failed=failed)
        return json_response(201, encode(SendResponse(messages=[MessageId(msg_id)])))

    def _login(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        user, password = basic_credentials(req.headers.get("authorization", ""))
        if user != state.config.username or not hmac.compare_digest(
            password.encode(), state.password.encode()
        ):
            raise errors.unauthorized()
        if req.body.strip():  # only the first login of a new install sends a body
            new_password = decode_body(decode_login, req.body).new_password
            if new_password is not None:
                if not 8 <= len(new_password) <= 64:
                    raise errors.invalid("new_password must have 8 to 64 characters")
                state.password = new_password
        token, exp = state.tokens.issue(user, self._wall.now())
        state.counters.logins += 1
        user_token = LoginUser(token=token, expires_after=expires_after(exp))
        return json_response(200, encode(LoginResponse(users=[user_token])))

    def _logout(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        state.tokens.revoke(self._authorize(state, req))
        return json_response(200, _OK)

    def _health(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        return json_response(200, _HEALTH)

    def _get_settings(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        app = ApplicationSettings(webhooks=WebhooksSettings(url=state.webhook_url))
        return json_response(200, encode(SettingsResponse(settings=Settings(application=app))))

    def _patch_settings(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        settings = decode_body(decode_settings, req.body)
        if settings.webhooks is not None:
            url = settings.webhooks.url or None
            if url is not None and not url.startswith(("http://", "https://")):
                raise errors.invalid(f"webhooks.url must be an http(s) URL: {url!r}")
            state.webhook_url = url
        return json_response(200, _OK)

    def _register_account(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        return self.accounts.register(state, req.body)

    def _verify_account(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        return self.accounts.verify(state, req.body)

    def _contacts(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        results = []
        for given in decode_body(decode_contacts, req.body).contacts:
            wa_id = given.strip().removeprefix("+")
            if wa_id.isascii() and wa_id.isdigit() and not wa_id.startswith(self._invalid_prefix):
                results.append(ContactResult(input=given, status="valid", wa_id=wa_id))
            else:
                results.append(ContactResult(input=given, status="invalid"))
        return json_response(200, encode(ContactsResponse(contacts=results)))

    def _upload_media(self, state: NumberState, req: SimRequest, _: str) -> SimResponse:
        self._authorize(state, req)
        mime_type = req.headers.get("content-type", "")
        if not req.body or not mime_type:
            raise errors.missing("A media upload needs a body and a Content-Type")
        media_id = state.store_media(req.body, mime_type)
        return json_response(201, encode(MediaUploaded(media=[MessageId(media_id)])))

    def _get_media(self, state: NumberState, req: SimRequest, media_id: str) -> SimResponse:
        self._authorize(state, req)
        found = state.media.get(media_id)
        if found is None:
            raise errors.not_found(f"Media {media_id!r} not found")
        mime_type, data = found
        return SimResponse(200, [("content-type", mime_type)], data)

    def _authorize(self, state: NumberState, req: SimRequest) -> str:
        """The request's bearer token if it is valid now; else 401."""
        auth = req.headers.get("authorization", "")
        token = auth[7:].strip()
        if auth[:7].lower() != "bearer " or not state.tokens.valid(token, self._wall.now()):
            raise errors.unauthorized()
        return token
