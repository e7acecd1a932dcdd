"""The simulator's Cloud API (Graph) mode: ``POST /{version}/{phone-number-id}/messages``.

Sans-IO like the On-Prem core: ``CloudApi.respond`` answers a request at once
(times from ``trio.current_time()`` and the wall clock), ``run`` posts the
webhooks. What it enforces, with Meta's error bodies (``{"error": {...}}``):

- the bearer token (``190`` once revoked or wrong, HTTP 401);
- ``messaging_product: "whatsapp"`` and the message shape (``100``, ``131008``, ``131009``);
- throughput per number (``130429``), pair rate per recipient (``131056``,
  with Meta's borrowed quota: after a burst of n the next waits n x 6 s, see
  ``ratelimit.PairGate``) and the messaging tier: unique business-initiated recipients per rolling
  24 h (``131048``); a recipient who wrote in the last 24 h is inside the
  service window and does not count;
- templates against the registered ones (``132001`` unknown name/language,
  ``132000`` parameter count);
- with ``enforce_window``, free-form messages outside the service window are
  accepted and then fail by webhook with ``131047``, as on the platform.

Webhooks use the Cloud envelope (``object / entry / changes / value`` with
``metadata``, ``contacts`` carrying ``wa_id`` and ``user_id``), signed with
``X-Hub-Signature-256`` (HMAC-SHA256 of the body keyed with the app secret):
``sent``, ``delivered``, ``read`` per accepted message; ``failed`` with
``131026`` for recipients that are not WhatsApp users.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any, Final, Protocol, final

import attrs
import msgspec
import trio

from dispatcher.core.clock import WallClock
from dispatcher.simulator.cloud_hooks import CloudHooks, Destination, user_id
from dispatcher.simulator.cloud_hooks import SignedPoster as SignedPoster  # re-exported
from dispatcher.simulator.cloud_hooks import sign as sign  # re-exported
from dispatcher.simulator.config import DEFAULT_INVALID_PREFIX
from dispatcher.simulator.exchange import SimRequest, SimResponse, json_response
from dispatcher.simulator.ids import IdMaker
from dispatcher.simulator.ratelimit import PairGate, RateGate

WINDOW: Final = 24 * 3600.0
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")
_VERSION = re.compile(r"^v[0-9]+\.[0-9]+$")
_TO = re.compile(r"^\+?[0-9]{5,15}$")
_PAIRS_SWEEP_AT: Final = 65_536  # remembered pairs before the idle ones are forgotten
_encoder: Final = msgspec.json.Encoder()


class CloudTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A registered (approved) template: its body text with ``{{1}}``.. placeholders."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    language: str = "en_US"
    body: str = ""

    @property
    def parameters(self) -> int:
        return len(set(_PLACEHOLDER.findall(self.body)))


class CloudNumber(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One simulated Cloud API business number."""

    number: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{4,14}$")]
    phone_number_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,32}$")]
    access_token: Annotated[str, msgspec.Meta(min_length=1)]
    app_secret: Annotated[str, msgspec.Meta(min_length=1)]
    webhook_url: str | None = None
    waba_id: str = "102290129340398"
    throughput: Annotated[float, msgspec.Meta(gt=0.0)] = 80.0
    throughput_burst: Annotated[int, msgspec.Meta(ge=1)] = 80
    pair_interval: Annotated[float, msgspec.Meta(gt=0.0)] = 6.0
    pair_burst: Annotated[int, msgspec.Meta(ge=1)] = 45
    messaging_limit: Annotated[int, msgspec.Meta(ge=1)] | None = 250
    enforce_window: bool = False
    templates: list[CloudTemplate] = []


class CloudCounters(msgspec.Struct):
    accepted: int = 0
    unauthorized: int = 0
    invalid: int = 0
    throughput_limited: int = 0
    pair_limited: int = 0
    tier_limited: int = 0
    template_errors: int = 0
    webhooks_sent: int = 0
    webhooks_failed: int = 0


@attrs.define(eq=False)
class _State:
    config: CloudNumber
    gate: RateGate
    counters: CloudCounters = attrs.Factory(CloudCounters)
    token: str = ""
    pairs: dict[str, PairGate] = attrs.Factory(dict)  # recipient -> its pair rate (Meta's borrowing)
    pairs_sweep_at: int = _PAIRS_SWEEP_AT  # doubles while most remembered pairs still owe time
    reached: dict[str, float] = attrs.Factory(dict)  # recipient -> wall time first reached (tier)
    reached_order: deque[tuple[float, str]] = attrs.Factory(deque)
    last_inbound: dict[str, float] = attrs.Factory(dict)  # customer -> wall time of their last message
    received: deque[dict[str, Any]] = attrs.Factory(deque)  # the latest sends, bounded by add_number


def _forget_idle_pairs(state: _State, now: float) -> None:
    """Drop the pairs that owe nothing (a new one behaves the same); amortized O(1) per new pair."""
    state.pairs = {r: gate for r, gate in state.pairs.items() if not gate.idle(now)}
    state.pairs_sweep_at = max(_PAIRS_SWEEP_AT, 2 * len(state.pairs))


class WabaTemplates(Protocol):
    """The simulated WABAs' templates, as the sends of their numbers see them."""

    def has_waba(self, waba_id: str) -> bool: ...

    def check_send(self, waba_id: str, template: Any) -> SimResponse | None: ...


def graph_error(
    status: int, code: int, message: str, details: str = "", *, subcode: int | None = None
) -> SimResponse:
    """Meta's error envelope; ``fbtrace_id`` random like the platform's."""
    error: dict[str, Any] = {
        "message": f"(#{code}) {message}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details or message},
        "fbtrace_id": "A" + hashlib.sha1(f"{code}{trio.current_time()}".encode()).hexdigest()[:22],
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return json_response(status, _encoder.encode({"error": error}))


@final
class CloudApi:
    """Every Cloud number of one simulator, by phone number id."""

    def __init__(
        self,
        *,
        wall_clock: WallClock,
        ids: IdMaker,
        status_delays: tuple[float, float, float] | None = (0.0, 0.05, 0.1),
        poster: SignedPoster | None = None,
        invalid_prefix: str = DEFAULT_INVALID_PREFIX,
        webhook_retries: int = 3,
        webhook_retry_delay: float = 0.2,
        webhook_batch: int = 1,
        webhook_concurrency: int = 1,
        received_limit: int = 100_000,
        waba_templates: WabaTemplates | None = None,
    ) -> None:
        """``waba_templates``: the simulated WABAs' templates; a number of one sends only those."""
        self._wall = wall_clock
        self._waba_templates = waba_templates
        self._ids = ids
        self._invalid_prefix = invalid_prefix
        self._received_limit = received_limit
        self._numbers: dict[str, _State] = {}
        self._hooks = CloudHooks(
            lookup=self._destination,
            count=self._count_post,
            wall_clock=wall_clock,
            status_delays=status_delays,
            batch=webhook_batch,
            concurrency=webhook_concurrency,
            retries=webhook_retries,
            retry_delay=webhook_retry_delay,
            poster=poster,
        )

    # -- numbers ------------------------------------------------------------------

    def add_number(self, number: CloudNumber) -> None:
        """Serve ``number``. Raises ValueError if its phone number id is taken, msgspec errors if invalid."""
        number = msgspec.convert(msgspec.to_builtins(number), CloudNumber)
        if number.phone_number_id in self._numbers:
            raise ValueError(f"phone number id {number.phone_number_id} is already simulated")
        self._numbers[number.phone_number_id] = _State(
            number,
            RateGate(number.throughput, number.throughput_burst),
            token=number.access_token,
            received=deque(maxlen=self._received_limit),
        )

    def remove_number(self, phone_number_id: str) -> None:
        del self._numbers[phone_number_id]

    def numbers(self) -> list[CloudNumber]:
        return [s.config for s in self._numbers.values()]

    def counters(self, phone_number_id: str) -> CloudCounters:
        return msgspec.structs.replace(self._numbers[phone_number_id].counters)

    def received(self, phone_number_id: str) -> list[dict[str, Any]]:
        """The latest accepted send bodies (up to ``received_limit``), in arrival order."""
        return list(self._numbers[phone_number_id].received)

    def set_webhook_url(self, phone_number_id: str, url: str | None) -> None:
        state = self._numbers[phone_number_id]
        state.config = msgspec.structs.replace(state.config, webhook_url=url)

    def set_limits(self, phone_number_id: str, *, messaging_limit: int | None, throughput: float) -> None:
        """Meta changed the number's messaging tier (None: unlimited) or throughput: enforced from now
        (the burst follows the throughput in proportion)."""
        state = self._numbers[phone_number_id]
        config = state.config
        if throughput != config.throughput:
            burst = max(1, round(config.throughput_burst * throughput / config.throughput))
            config = msgspec.structs.replace(config, throughput=throughput, throughput_burst=burst)
            state.gate = RateGate(throughput, burst)
        state.config = msgspec.structs.replace(config, messaging_limit=messaging_limit)

    def post_waba_change(
        self, key: str, destination: Callable[[], Destination | None], field: str, value: dict[str, Any]
    ) -> None:
        """Post a change of an account field (``account_update``...) now, to the WABA's subscription
        ``destination`` names (``emit_field`` posts by the URL of the WABA's numbers instead)."""
        self._hooks.push_waba_change(key, destination, field, value)

    def revoke_token(self, phone_number_id: str, new_token: str | None = None) -> None:
        """The system user's token is revoked: only ``new_token`` (if given) works from now on."""
        self._numbers[phone_number_id].token = new_token or ""

    def register_template(self, phone_number_id: str, template: CloudTemplate) -> None:
        state = self._numbers[phone_number_id]
        state.config = msgspec.structs.replace(
            state.config,
            templates=[
                *state.config.templates,
                msgspec.convert(msgspec.to_builtins(template), CloudTemplate),
            ],
        )

    # -- customers ------------------------------------------------------------------

    def inbound_text(
        self, phone_number_id: str, sender: str, body: str, *, profile_name: str = "Customer"
    ) -> str:
        """Customer ``sender`` writes ``body``: opens their service window; returns the wamid.

        Raises:
            KeyError: unknown phone number id.
            LookupError: the number has no webhook URL.
        """
        return self.inbound(phone_number_id, sender, "text", body, profile_name=profile_name)

    def inbound(
        self,
        phone_number_id: str,
        sender: str,
        kind: str,
        body: str = "",
        *,
        profile_name: str = "Customer",
        username_only: bool = False,
        repeat: int = 1,
    ) -> str:
        """Customer ``sender`` sends a message of ``kind``, shaped as Meta posts it; returns the wamid.

        ``kind``: ``text``; ``voice`` (a voice note, ``audio/ogg; codecs=opus``); ``flow_reply``
        (a WhatsApp Flows completion, ``body`` its response JSON); ``reaction`` (``body`` the
        emoji); ``unsupported`` (with Meta's 131051 ``errors``); any other name is a type Meta
        may add later, with ``{"body": body}`` as its object. ``username_only``: the customer
        adopted a username, so the contact has only its business-scoped ``user_id`` and the
        message no ``from``. ``repeat``: posted that many times (Meta's redeliveries).

        Raises:
            KeyError: unknown phone number id.
            LookupError: the number has no webhook URL.
        """
        state = self._numbers[phone_number_id]
        if state.config.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        digits = sender.strip().removeprefix("+")
        wamid = self._wamid()
        now = self._wall.now()
        state.last_inbound[digits] = now
        message: dict[str, Any] = {"id": wamid, "timestamp": str(int(now)), **_content(kind, body, wamid)}
        contact: dict[str, Any] = {"profile": {"name": profile_name}, "user_id": user_id(digits)}
        if username_only:
            contact["profile"]["username"] = "@" + profile_name.lower().replace(" ", "")
        else:
            contact["wa_id"] = digits
            message = {"from": digits, **message}
        value = {"messaging_product": "whatsapp", "metadata": self._metadata(state), "contacts": [contact]}
        value["messages"] = [message]
        for _ in range(repeat):
            self._hooks.push_value(phone_number_id, digits, value)
        return wamid

    def emit_status(
        self,
        phone_number_id: str,
        wamid: str,
        status: str,
        *,
        recipient: str = "",
        errors: list[dict[str, Any]] | None = None,
        repeat: int = 1,
    ) -> None:
        """Post one status for ``wamid`` now, ``repeat`` times: any status (one Meta adds later too),
        with an ``errors`` array if given, whatever the message's history."""
        state = self._numbers[phone_number_id]
        if state.config.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        item: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(self._wall.now())),
            "recipient_id": recipient,
        }
        if errors:
            item["errors"] = errors
        for _ in range(repeat):
            self._hooks.push_value(phone_number_id, recipient or wamid, {"statuses": [item]})

    def emit_field(self, waba_id: str, field: str, value: dict[str, Any]) -> bool:
        """Post a WABA's change of ``field`` (template, account updates) to the webhook URL of its
        first number that has one, as Meta posts to the app subscribed to the WABA; False if none."""
        for state in self._numbers.values():
            if state.config.waba_id == waba_id and state.config.webhook_url is not None:
                self._hooks.push_change(state.config.phone_number_id, field, value)
                return True
        return False

    def emit_value(self, phone_number_id: str, value: dict[str, Any], *, repeat: int = 1) -> None:
        """Post ``value`` (any change value, e.g. recorded from the real platform) in a signed
        envelope now, ``repeat`` times; its ``metadata`` is the number's unless given."""
        state = self._numbers[phone_number_id]
        if state.config.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        for _ in range(repeat):
            self._hooks.push_value(phone_number_id, phone_number_id, value)

    # -- requests -------------------------------------------------------------------

    def respond(self, req: SimRequest, path: str) -> SimResponse:
        """``path``: ``/{version}/{phone-number-id}/messages``."""
        parts = path.strip("/").split("/")
        if len(parts) != 3 or not _VERSION.match(parts[0]):
            return graph_error(400, 100, "Unknown path components", f"No Graph API path {path[:100]!r}")
        state = self._numbers.get(parts[1])
        if state is None:
            return graph_error(
                400,
                100,
                "Invalid parameter",
                f"Unsupported post request. Object with ID '{parts[1][:40]}' does not exist",
            )
        if parts[2] != "messages" or req.method != "POST":
            return graph_error(
                400, 100, "Unsupported request", f"{req.method} {parts[2][:40]} is not supported"
            )
        auth = req.headers.get("authorization", "")
        if not state.token or not hmac.compare_digest(auth.encode(), f"Bearer {state.token}".encode()):
            state.counters.unauthorized += 1
            return graph_error(
                401,
                190,
                "Error validating access token: Session has expired",
                "Invalid OAuth access token.",
                subcode=463,
            )
        try:
            msg = msgspec.json.decode(req.body)
        except msgspec.DecodeError:
            state.counters.invalid += 1
            return graph_error(400, 100, "Invalid parameter", "The request body is not valid JSON")
        if not isinstance(msg, dict):
            state.counters.invalid += 1
            return graph_error(400, 100, "Invalid parameter", "The request body must be a JSON object")
        return self._send(state, msg)

    def _send(self, state: _State, msg: dict[str, Any]) -> SimResponse:
        if msg.get("messaging_product") != "whatsapp":
            state.counters.invalid += 1
            return graph_error(400, 100, "Invalid parameter", "The parameter messaging_product is required.")
        if "status" in msg and msg.get("status") == "read":
            return json_response(200, b'{"success":true}')  # mark as read
        to = msg.get("to")
        if not isinstance(to, str) or not _TO.match(to):
            state.counters.invalid += 1
            return graph_error(400, 131008, "Required parameter is missing", "The parameter to is required.")
        kind = msg.get("type", "text")
        problem = self._check_payload(msg, kind)
        if problem is not None:
            state.counters.invalid += 1
            return graph_error(400, 131009, "Parameter value is not valid", problem)
        template_error = None
        if kind == "template":
            waba = self._waba_templates
            if waba is not None and waba.has_waba(state.config.waba_id):
                template_error = waba.check_send(state.config.waba_id, msg["template"])
            else:
                template_error = self._check_template(state, msg)
        if template_error is not None:
            state.counters.template_errors += 1
            return template_error
        digits = to.removeprefix("+")
        now, wall_now = trio.current_time(), self._wall.now()
        if not state.gate.admit(now):
            state.counters.throughput_limited += 1
            return graph_error(
                400,
                130429,
                "Rate limit hit",
                "Cloud API message throughput has been reached.",
                subcode=2494055,
            )
        pair = state.pairs.get(digits)
        if pair is None:
            if len(state.pairs) >= state.pairs_sweep_at:
                _forget_idle_pairs(state, now)
            pair = state.pairs[digits] = PairGate(state.config.pair_interval, state.config.pair_burst)
        if not pair.admit(now):
            state.counters.pair_limited += 1
            return graph_error(
                400,
                131056,
                "(Business Account, Consumer Account) pair rate limit hit",
                "Message failed to send because there were too many messages sent from this phone number "
                "to the same phone number in a short period of time.",
            )
        in_window = wall_now - state.last_inbound.get(digits, -WINDOW) < WINDOW
        if not in_window and not self._tier_admit(state, digits, wall_now):
            state.counters.tier_limited += 1
            return graph_error(
                400,
                131048,
                "Spam rate limit hit",
                "Message failed to send because there are restrictions on how many messages can be sent "
                "from this phone number. This may be because too many previous messages were blocked or "
                "flagged as spam.",
            )
        wamid = self._wamid()
        state.counters.accepted += 1
        state.received.append(msg)
        failure: tuple[int, str] | None = None
        if digits.startswith(self._invalid_prefix):
            failure = (131026, "Message undeliverable")
        elif state.config.enforce_window and kind != "template" and not in_window:
            failure = (131047, "Re-engagement message")
        if state.config.webhook_url is not None:
            self._hooks.push_statuses(state.config.phone_number_id, wamid, digits, failure)
        answer: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": digits}],
            "messages": [
                {"id": wamid, "message_status": "accepted"} if kind == "template" else {"id": wamid}
            ],
        }
        return json_response(200, _encoder.encode(answer))

    @staticmethod
    def _check_payload(msg: dict[str, Any], kind: Any) -> str | None:
        if kind == "text":
            text = msg.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
                return "text.body is required for a text message"
            if len(text["body"]) > 4096:
                return "text.body is longer than 4096 characters"
            return None
        if kind in ("image", "video", "audio", "document", "sticker"):
            media = msg.get(kind)
            if not isinstance(media, dict) or (("id" in media) == ("link" in media)):
                return f"{kind} needs exactly one of id or link"
            return None
        if kind in ("template", "interactive", "location", "contacts", "reaction"):
            return None if isinstance(msg.get(kind), (dict, list)) else f"{kind} object is required"
        return f"Unsupported message type {str(kind)[:32]!r}"

    @staticmethod
    def _check_template(state: _State, msg: dict[str, Any]) -> SimResponse | None:
        template = msg["template"]
        name = template.get("name") if isinstance(template, dict) else None
        language = template.get("language", {}) if isinstance(template, dict) else {}
        code = language.get("code") if isinstance(language, dict) else None
        match = next(
            (t for t in state.config.templates if t.name == name and t.language == code),
            None,
        )
        if match is None:
            return graph_error(
                404,
                132001,
                "Template name does not exist in the translation",
                f"template name ({str(name)[:64]}) does not exist in {str(code)[:16]}",
            )
        given = 0
        for component in template.get("components") or []:
            if isinstance(component, dict) and str(component.get("type", "")).lower() == "body":
                given += len(component.get("parameters") or [])
        if given != match.parameters:
            return graph_error(
                400,
                132000,
                "Number of parameters does not match the expected number of params",
                f"body: number of localizable_params ({given}) does not match the expected number of params "
                f"({match.parameters})",
            )
        return None

    def _tier_admit(self, state: _State, digits: str, wall_now: float) -> bool:
        limit = state.config.messaging_limit
        if limit is None:
            return True
        order = state.reached_order
        while order and wall_now - order[0][0] >= WINDOW:
            at, old = order.popleft()
            if state.reached.get(old) == at:
                del state.reached[old]
        if digits in state.reached:
            return True
        if len(state.reached) >= limit:
            return False
        state.reached[digits] = wall_now
        order.append((wall_now, digits))
        return True

    # -- webhooks (posted by CloudHooks) -----------------------------------------------------------------

    def _wamid(self) -> str:
        return "wamid." + self._ids.new("HBgL")

    @staticmethod
    def _metadata(state: _State) -> dict[str, str]:
        return {
            "display_phone_number": state.config.number.removeprefix("+"),
            "phone_number_id": state.config.phone_number_id,
        }

    def _destination(self, phone_number_id: str) -> Destination | None:
        state = self._numbers.get(phone_number_id)
        if state is None:
            return None
        config = state.config
        if config.webhook_url is None:
            return None
        return Destination(config.webhook_url, config.app_secret, config.waba_id, self._metadata(state))

    def _count_post(self, phone_number_id: str, delivered: bool) -> None:
        state = self._numbers.get(phone_number_id)
        if state is None:
            return
        if delivered:
            state.counters.webhooks_sent += 1
        else:
            state.counters.webhooks_failed += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post due webhooks (batched per number, in order per recipient) until cancelled."""
        await self._hooks.run(task_status=task_status)


_UNSUPPORTED_ERROR: Final = {
    "code": 131051,
    "title": "Message type unknown",
    "message": "Message type unknown",
    "error_data": {"details": "Message type is currently not supported."},
}


def _content(kind: str, body: str, wamid: str) -> dict[str, Any]:
    """The ``type`` and type object of a customer's message, as Meta posts them."""
    match kind:
        case "text":
            return {"type": "text", "text": {"body": body}}
        case "voice":
            media = {
                "mime_type": "audio/ogg; codecs=opus",
                "sha256": hashlib.sha256(wamid.encode()).hexdigest(),
                "id": str(int(hashlib.sha256(wamid.encode()).hexdigest()[:15], 16)),
                "voice": True,
            }
            return {"type": "audio", "audio": media}
        case "flow_reply":
            reply = {"response_json": body or "{}", "body": "Sent", "name": "flow"}
            return {"type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": reply}}
        case "reaction":
            return {"type": "reaction", "reaction": {"message_id": wamid, "emoji": body}}
        case "unsupported":
            return {"type": "unsupported", "errors": [_UNSUPPORTED_ERROR], "unsupported": {"type": "edit"}}
    return {"type": kind, kind: {"body": body}}
