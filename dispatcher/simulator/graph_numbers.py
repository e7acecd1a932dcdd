"""The simulator's Graph number management: a WABA's numbers from nothing to sending.

What it serves, under ``/{version}/`` (reference: templates-lifecycle-channels.md 2.1-2.4):

- ``GET|POST /{waba-id}/phone_numbers``: list (all fields) / add a number (``cc``, ``phone_number``,
  ``verified_name``: Meta's docs; pywa's ``country_code`` too) -> ``{"id"}``;
- ``GET /{phone-number-id}?fields=...``: the number's fields (``verified_name``,
  ``code_verification_status``, ``quality_rating``, ``throughput``, ``status``,
  ``whatsapp_business_manager_messaging_limit``, ``platform_type``, ...);
- ``POST /{phone-number-id}``: ``{"pin"}`` (two-step verification), ``{"webhook_configuration":
  {"override_callback_uri", "verify_token"}}`` (``""`` clears it), ``{"new_display_name"}``;
- ``POST /{phone-number-id}/request_code`` (``code_method`` SMS|VOICE, ``language``: both required,
  else 100), ``/verify_code`` (``code``), ``/register`` (``messaging_product``, ``pin``), ``/deregister``;
- ``GET|POST /{phone-number-id}/whatsapp_business_profile``;
- ``GET|POST|DELETE /{waba-id}/subscribed_apps`` (``override_callback_uri``, ``verify_token``);
- ``GET /debug_token?input_token=``: the token's kind and expiry (``type``, ``expires_at``).

Form bodies, JSON bodies and query parameters are all read, as Graph does.
A registered number is served for ``/messages`` by ``CloudApi`` (added on
register, with its WABA's token and app secret, its webhook URL resolved as
Meta does: the number's override, else the WABA's, else the app's callback);
a deregistered one no longer is. Errors are Meta's envelope; the codes of
the registration errors (133005 PIN mismatch, 133006 re-verification needed,
133010 not registered, 133016 register limit, 136025 wrong code) are as Meta's
error-codes page lists them; the reference confirms 133016 and the range.

The control API (``/_sim/graph/...``, ``graph_control``) creates WABAs, reads a
number (its verification code included), and posts the account webhooks.
"""

from __future__ import annotations

import random
import urllib.parse
from collections import deque
from typing import Any, Final, final

import attrs
import msgspec

from dispatcher.core.clock import WallClock
from dispatcher.simulator.cloud import CloudApi, CloudNumber, graph_error
from dispatcher.simulator.cloud_hooks import Destination
from dispatcher.simulator.exchange import SimRequest, SimResponse, json_response

_encoder: Final = msgspec.json.Encoder()
_SUCCESS: Final = b'{"success":true}'
REGISTER_LIMIT: Final = 10  # register/deregister calls per number in REGISTER_WINDOW
REGISTER_WINDOW: Final = 72 * 3600.0
TIER_LIMITS: Final[dict[str, int | None]] = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
    "TIER_UNLIMITED": None,
}
THROUGHPUT: Final = {"STANDARD": 80.0, "HIGH": 1000.0}
_DEFAULT_FIELDS: Final = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
)
PROFILE_FIELDS: Final = (
    "about",
    "address",
    "description",
    "email",
    "profile_picture_url",
    "websites",
    "vertical",
)


@attrs.define(eq=False)
class SimWaba:
    id: str
    token: str
    app_secret: str
    callback_url: str | None = None  # the app's webhook callback (App Dashboard)
    token_type: str = "SYSTEM_USER"  # what debug_token says: SYSTEM_USER | USER | PAGE
    token_expires_at: int = 0  # Unix seconds; 0: never
    subscribed: bool = False
    override_url: str | None = None
    override_verify: str | None = None


@attrs.define(eq=False)
class SimPhone:
    phone_number_id: str
    waba_id: str
    number: str  # +E.164
    verified_name: str
    code: str | None = None
    code_verification_status: str = "NOT_VERIFIED"
    registered: bool = False
    pin: str | None = None
    status: str = "PENDING"
    quality_rating: str = "GREEN"
    throughput_level: str = "STANDARD"
    messaging_limit_tier: str = "TIER_250"
    name_status: str = "APPROVED"
    override_url: str | None = None
    override_verify: str | None = None
    profile: dict[str, Any] = attrs.Factory(lambda: {"messaging_product": "whatsapp"})
    register_calls: deque[float] = attrs.Factory(deque)

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.phone_number_id,
            "display_phone_number": _display(self.number),
            "verified_name": self.verified_name,
            "code_verification_status": self.code_verification_status,
            "quality_rating": self.quality_rating,
            "throughput": {"level": self.throughput_level},
            "whatsapp_business_manager_messaging_limit": self.messaging_limit_tier,
            "messaging_limit_tier": self.messaging_limit_tier,
            "status": self.status,
            "name_status": self.name_status,
            "platform_type": "CLOUD_API" if self.registered else "NOT_APPLICABLE",
            "account_mode": "LIVE",
            "is_pin_enabled": self.pin is not None,
            "is_official_business_account": False,
            "webhook_configuration": {"phone_number": self.override_url} if self.override_url else {},
        }


def _display(number: str) -> str:
    """``+15550001234`` -> ``+1 555-000-1234`` for NANP numbers, as Meta shows them; else as given."""
    digits = number.lstrip("+")
    if len(digits) == 11 and digits.startswith("1"):
        return f"+1 {digits[1:4]}-{digits[4:7]}-{digits[7:]}"
    return number


def _params(req: SimRequest) -> dict[str, Any]:
    """Query, then a form or JSON body: Graph reads all three."""
    query = req.target.partition("?")[2]
    found: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
    body = req.body.strip()
    if not body:
        return found
    if body.startswith(b"{"):
        decoded = msgspec.json.decode(body)
        if not isinstance(decoded, dict):
            raise ValueError("the body must be a JSON object")
        found.update(decoded)
    else:
        found.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
    return found


def _bad(details: str, code: int = 100, message: str = "Invalid parameter") -> SimResponse:
    return graph_error(400, code, message, details[:300])


@final
class GraphNumbers:
    """The WABAs and their numbers; registered numbers are handed to ``cloud`` to send."""

    def __init__(self, *, cloud: CloudApi, wall_clock: WallClock, seed: int | None = None) -> None:
        self._cloud = cloud
        self._wall = wall_clock
        self._random = random.Random(seed)
        self.wabas: dict[str, SimWaba] = {}
        self.phones: dict[str, SimPhone] = {}
        self._next_id = 110_000_000_000_001

    # -- control (graph_control) -----------------------------------------------------------

    def add_waba(self, waba: SimWaba) -> None:
        if waba.id in self.wabas:
            raise ValueError(f"WABA {waba.id} already exists")
        self.wabas[waba.id] = waba

    def add_phone(
        self, waba_id: str, number: str, verified_name: str, phone_number_id: str | None = None
    ) -> SimPhone:
        """A number in WABA ``waba_id``, not verified nor registered (as added in WhatsApp Manager)."""
        if waba_id not in self.wabas:
            raise KeyError(waba_id)
        if any(p.number == number for p in self.phones.values()):
            raise ValueError(f"{number} is already in a WABA")
        pnid = phone_number_id or self._new_id()
        phone = SimPhone(pnid, waba_id, number, verified_name)
        self.phones[pnid] = phone
        return phone

    def destination(self, waba_id: str) -> Destination | None:
        """Where a WABA's account webhooks go: its override, else the app's callback."""
        waba = self.wabas.get(waba_id)
        if waba is None or not waba.subscribed:
            return None
        url = waba.override_url or waba.callback_url
        return None if url is None else Destination(url, waba.app_secret, waba.id, {})

    def post_account_change(self, waba_id: str, field: str, value: dict[str, Any]) -> None:
        """Post a change of an account field of ``waba_id`` (as Meta does, to the WABA's subscription)."""
        if waba_id not in self.wabas:
            raise KeyError(waba_id)
        self._cloud.post_waba_change(f"waba:{waba_id}", lambda: self.destination(waba_id), field, value)

    def quality_event(
        self, pnid: str, event: str, tier: str | None, *, legacy: bool = False
    ) -> dict[str, Any]:
        """Meta changes the number's tier or throughput: the simulator enforces it, and posts
        ``phone_number_quality_update`` (current shape: ``max_daily_conversations_per_business``;
        ``legacy``: the pre-2026 ``current_limit``)."""
        phone = self.phones[pnid]
        if tier is not None:
            if tier not in TIER_LIMITS:
                raise ValueError(f"unknown tier {tier!r}")
            phone.messaging_limit_tier = tier
        if event == "THROUGHPUT_UPGRADE":
            phone.throughput_level = "HIGH"
        elif event == "FLAGGED":
            phone.status, phone.quality_rating = "FLAGGED", "RED"
        elif event == "UNFLAGGED":
            phone.status, phone.quality_rating = "CONNECTED", "GREEN"
        self._sync_limits(phone)
        value: dict[str, Any] = {"display_phone_number": phone.number.lstrip("+"), "event": event}
        if event == "THROUGHPUT_UPGRADE":
            value["current_limit"] = "TIER_UNLIMITED"
        elif legacy:
            value["current_limit"] = phone.messaging_limit_tier
        if tier is not None and not legacy:
            value["max_daily_conversations_per_business"] = tier
        self.post_account_change(phone.waba_id, "phone_number_quality_update", value)
        return value

    # -- Graph -------------------------------------------------------------------------------

    def respond(self, req: SimRequest, parts: list[str]) -> SimResponse | None:
        """``parts``: the path after the version. None if the path is not one of ours."""
        try:
            if parts == ["debug_token"] and req.method == "GET":
                return self._debug_token(req)
            if len(parts) == 2 and parts[0] in self.wabas:
                return self._waba(req, self.wabas[parts[0]], parts[1])
            if parts and parts[0] in self.phones:
                return self._phone(req, self.phones[parts[0]], parts[1:])
            if len(parts) == 1 and req.method == "GET":
                return self._served_fields(req, parts[0])
        except (msgspec.DecodeError, ValueError) as exc:
            return _bad(str(exc))
        return None

    def _authorized(self, req: SimRequest, waba: SimWaba) -> bool:
        return req.headers.get("authorization", "") == f"Bearer {waba.token}"

    def _unauthorized(self) -> SimResponse:
        return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token", subcode=463)

    def _waba(self, req: SimRequest, waba: SimWaba, edge: str) -> SimResponse | None:
        if not self._authorized(req, waba):
            return self._unauthorized()
        if edge == "phone_numbers":
            if req.method == "GET":
                data = [p.fields() for p in self.phones.values() if p.waba_id == waba.id]
                return json_response(200, _encoder.encode({"data": data, "paging": {"cursors": {}}}))
            if req.method == "POST":
                params = _params(req)
                # Meta's docs name it "cc"; pywa sends "country_code": both are read.
                cc = str(params.get("cc", params.get("country_code", "")))
                local = str(params.get("phone_number", ""))
                name = str(params.get("verified_name", ""))
                if not cc.isdigit() or not local.isdigit() or not name:
                    return _bad("country_code, phone_number (digits) and verified_name are required")
                phone = self.add_phone(waba.id, f"+{cc}{local}", name)
                return json_response(200, _encoder.encode({"id": phone.phone_number_id}))
        if edge == "subscribed_apps":
            return self._subscribed_apps(req, waba)
        return None

    def _subscribed_apps(self, req: SimRequest, waba: SimWaba) -> SimResponse:
        if req.method == "GET":
            data: list[dict[str, Any]] = []
            if waba.subscribed:
                app: dict[str, Any] = {"whatsapp_business_api_data": {"id": "1", "name": "wadispatch-sim"}}
                if waba.override_url:
                    app["override_callback_uri"] = waba.override_url
                data.append(app)
            return json_response(200, _encoder.encode({"data": data}))
        if req.method == "POST":
            params = _params(req)
            url = params.get("override_callback_uri")
            if url:
                if not str(url).startswith(("http://", "https://")):
                    return _bad("override_callback_uri must be an http(s) URL")
                if not params.get("verify_token"):
                    return _bad("verify_token is required with override_callback_uri")
            waba.subscribed = True
            waba.override_url = str(url) if url else None  # an empty body also clears the override
            waba.override_verify = str(params["verify_token"]) if url else None
            self._resolve_urls(waba.id)
            return json_response(200, _SUCCESS)
        if req.method == "DELETE":
            waba.subscribed, waba.override_url, waba.override_verify = False, None, None
            self._resolve_urls(waba.id)
            return json_response(200, _SUCCESS)
        return _bad(f"{req.method} is not supported on subscribed_apps")

    def _phone(self, req: SimRequest, phone: SimPhone, rest: list[str]) -> SimResponse | None:
        if not self._authorized(req, self.wabas[phone.waba_id]):
            return self._unauthorized()
        if not rest:
            if req.method == "GET":
                return self._fields(req, phone)
            if req.method == "POST":
                return self._update(phone, _params(req))
            return None
        if rest == ["whatsapp_business_profile"]:
            return self._profile(req, phone)
        if len(rest) != 1 or req.method != "POST":
            return None
        action = rest[0]
        params = _params(req)
        if action == "request_code":
            if params.get("code_method") not in ("SMS", "VOICE"):
                return _bad("code_method must be SMS or VOICE")
            if not params.get("language"):
                return _bad("language is required (a locale, e.g. en_US)")
            phone.code = f"{self._random.randrange(1_000_000):06d}"
            phone.code_verification_status = "NOT_VERIFIED"
            return json_response(200, _SUCCESS)
        if action == "verify_code":
            if phone.code is None or str(params.get("code", "")) != phone.code:
                return _bad("The verification code you entered is incorrect.", 136025, "Verify code error")
            phone.code_verification_status, phone.code = "VERIFIED", None
            return json_response(200, _SUCCESS)
        if action == "register":
            return self._register(phone, params)
        if action == "deregister":
            if (limited := self._register_limit(phone)) is not None:
                return limited
            phone.registered, phone.status = False, "DISCONNECTED"
            self._cloud.remove_number(phone.phone_number_id)
            return json_response(200, _SUCCESS)
        return None

    def _register(self, phone: SimPhone, params: dict[str, Any]) -> SimResponse:
        if params.get("messaging_product") != "whatsapp":
            return _bad("The parameter messaging_product is required.")
        pin = str(params.get("pin", ""))
        if len(pin) != 6 or not pin.isdigit():
            return _bad("pin: a 6-digit two-step verification PIN is required")
        if phone.code_verification_status != "VERIFIED":
            return _bad(
                "The phone number must be verified before it is registered.",
                133006,
                "Phone number re-verification needed",
            )
        if phone.pin is not None and pin != phone.pin:
            return _bad(
                "The two-step verification PIN is incorrect.", 133005, "Two step verification PIN Mismatch"
            )
        if (limited := self._register_limit(phone)) is not None:
            return limited
        phone.pin = pin
        if not phone.registered:
            phone.registered, phone.status = True, "CONNECTED"
            waba = self.wabas[phone.waba_id]
            self._cloud.add_number(
                CloudNumber(
                    number=phone.number,
                    phone_number_id=phone.phone_number_id,
                    access_token=waba.token,
                    app_secret=waba.app_secret,
                    webhook_url=self._number_url(phone),
                    waba_id=waba.id,
                    throughput=THROUGHPUT[phone.throughput_level],
                    throughput_burst=round(THROUGHPUT[phone.throughput_level]),
                    messaging_limit=TIER_LIMITS.get(phone.messaging_limit_tier, 250),
                )
            )
        return json_response(200, _SUCCESS)

    def _register_limit(self, phone: SimPhone) -> SimResponse | None:
        now = self._wall.now()
        calls = phone.register_calls
        while calls and now - calls[0] >= REGISTER_WINDOW:
            calls.popleft()
        if len(calls) >= REGISTER_LIMIT:
            return graph_error(
                400, 133016, "Account register deregister rate limit exceeded", "Too many register calls"
            )
        calls.append(now)
        return None

    def _served_fields(self, req: SimRequest, pnid: str) -> SimResponse | None:
        """The fields of a number served for sending without a WABA here (a sandbox number)."""
        served = next((n for n in self._cloud.numbers() if n.phone_number_id == pnid), None)
        if served is None:
            return None
        if req.headers.get("authorization", "") != f"Bearer {served.access_token}":
            return self._unauthorized()
        phone = SimPhone(pnid, served.waba_id, served.number, "Sandbox", registered=True, status="CONNECTED")
        phone.code_verification_status, phone.pin = "VERIFIED", "000000"
        tier = next((name for name, limit in TIER_LIMITS.items() if limit == served.messaging_limit), None)
        phone.messaging_limit_tier = tier or str(served.messaging_limit)
        phone.throughput_level = "HIGH" if served.throughput >= THROUGHPUT["HIGH"] else "STANDARD"
        return self._fields(req, phone)

    def _fields(self, req: SimRequest, phone: SimPhone) -> SimResponse:
        wanted = _params(req).get("fields")
        names = [f.strip() for f in str(wanted).split(",") if f.strip()] if wanted else list(_DEFAULT_FIELDS)
        every = phone.fields()
        answer = {name: every[name] for name in names if name in every}
        answer["id"] = phone.phone_number_id
        return json_response(200, _encoder.encode(answer))

    def _update(self, phone: SimPhone, params: dict[str, Any]) -> SimResponse:
        if "pin" in params:
            pin = str(params["pin"])
            if len(pin) != 6 or not pin.isdigit():
                return _bad("pin: 6 digits")
            phone.pin = pin
        if "webhook_configuration" in params:
            config = params["webhook_configuration"]
            if isinstance(config, str):
                config = msgspec.json.decode(config)
            if not isinstance(config, dict):
                return _bad("webhook_configuration must be an object")
            url = config.get("override_callback_uri") or None
            if url is not None and not str(url).startswith(("http://", "https://")):
                return _bad("override_callback_uri must be an http(s) URL")
            phone.override_url = None if url is None else str(url)
            phone.override_verify = config.get("verify_token") if url else None
            self._resolve_urls(phone.waba_id)
        if "new_display_name" in params:
            phone.verified_name, phone.name_status = str(params["new_display_name"]), "PENDING_REVIEW"
        return json_response(200, _SUCCESS)

    def _profile(self, req: SimRequest, phone: SimPhone) -> SimResponse:
        if req.method == "GET":
            return json_response(200, _encoder.encode({"data": [phone.profile]}))
        if req.method != "POST":
            return _bad(f"{req.method} is not supported on whatsapp_business_profile")
        params = _params(req)
        if params.get("messaging_product") != "whatsapp":
            return _bad("The parameter messaging_product is required.")
        limits = {"about": 139, "address": 256, "description": 512, "email": 128}
        for key, limit in limits.items():
            if key in params and len(str(params[key])) > limit:
                return _bad(f"{key}: at most {limit} characters", 100)
        websites = params.get("websites")
        if websites is not None and (not isinstance(websites, list) or len(websites) > 2):
            return _bad("websites: at most 2 URLs")
        for key in (*limits, "vertical", "websites"):
            if key in params:
                phone.profile[key] = params[key]
        return json_response(200, _SUCCESS)

    def _debug_token(self, req: SimRequest) -> SimResponse:
        token = str(_params(req).get("input_token", ""))
        waba = next((w for w in self.wabas.values() if w.token == token), None)
        served = next((n for n in self._cloud.numbers() if n.access_token == token), None)
        if waba is None and served is not None:  # a sandbox number's own system-user token
            waba = SimWaba(served.waba_id, token, served.app_secret)
        if waba is None:
            data: dict[str, Any] = {
                "is_valid": False,
                "error": {"code": 190, "message": "Invalid OAuth access token"},
            }
        else:
            data = {
                "app_id": "1",
                "type": waba.token_type,
                "application": "wadispatch-sim",
                "expires_at": waba.token_expires_at,
                "is_valid": waba.token_expires_at == 0 or waba.token_expires_at > self._wall.now(),
                "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
                "granular_scopes": [
                    {"scope": "whatsapp_business_management", "target_ids": [waba.id]},
                    {"scope": "whatsapp_business_messaging", "target_ids": [waba.id]},
                ],
            }
        return json_response(200, _encoder.encode({"data": data}))

    # -- helpers -----------------------------------------------------------------------------

    def _number_url(self, phone: SimPhone) -> str | None:
        """Meta's precedence: the number's override, the WABA's override, the app's callback."""
        waba = self.wabas[phone.waba_id]
        if phone.override_url:
            return phone.override_url
        if not waba.subscribed:
            return None
        return waba.override_url or waba.callback_url

    def _resolve_urls(self, waba_id: str) -> None:
        for phone in self.phones.values():
            if phone.waba_id == waba_id and phone.registered:
                self._cloud.set_webhook_url(phone.phone_number_id, self._number_url(phone))

    def _sync_limits(self, phone: SimPhone) -> None:
        if phone.registered:
            self._cloud.set_limits(
                phone.phone_number_id,
                messaging_limit=TIER_LIMITS.get(phone.messaging_limit_tier, 250),
                throughput=THROUGHPUT[phone.throughput_level],
            )

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)
