"""The simulator of any spec-described channel: the spec read backwards, one number at a time.

A number of a spec kind is served under its digits (``/{digits}{send.path}``), as On-Prem
numbers are, so the same fault injection applies (``Simulator.handle``). For each request:

- the credentials are checked as the spec's ``[auth]`` says (a login call issues tokens);
- the body is matched against the kinds' templates (``spec_shape``): no kind matches ->
  ``[simulator.invalid_request]``; over the number's rate -> ``rate_limited``; a recipient
  that is not on the channel -> ``invalid_recipient`` (or, with ``failed_status``, accepted
  and then reported failed, as SMS gateways do); a retry key seen before -> ``duplicate``;
- an accepted send gets a new id (``accepted`` answer) and its statuses (``walk``) are
  posted to the number's webhook URL in the spec's document shape, signed as the spec's
  ``[webhook.signature]`` says; customers' messages (``inbound_text``/``inbound_media``)
  go the same way.

Every document is built by writing values at the paths the gateway reads, over the spec's
recorded payload (``status_document``/``inbound_document``), so the two sides cannot drift.
"""

from __future__ import annotations

import base64
import collections
import datetime
import functools
import hmac
import secrets
from collections.abc import Mapping
from typing import Final, final
from urllib.parse import parse_qsl, quote_plus

import attrs
import msgspec
import structlog
import trio

from actors.transport import Headers
from dispatcher.core.channelspec import paths, signing, template
from dispatcher.core.channelspec.load import LoadedSpec
from dispatcher.core.channelspec.model import SimAnswer, Spec
from dispatcher.core.clock import WallClock
from dispatcher.simulator.exchange import SimRequest, SimResponse
from dispatcher.simulator.faults import Faults
from dispatcher.simulator.hook_queue import HookQueue, Post, Shard, Target
from dispatcher.simulator.ratelimit import RateGate
from dispatcher.simulator.spec_shape import Shape, WrongSecretError, decode, match, shapes
from dispatcher.simulator.state import NumberCounters

log = structlog.get_logger(__name__)

_JSON: Final = (b"content-type", b"application/json")
_FORM: Final = (b"content-type", b"application/x-www-form-urlencoded")
TOKEN_TTL: Final = 3600


class SpecNumber(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A simulated number of a spec kind: its settings (as the gateway's config gives them)."""

    number: str
    kind: str
    settings: dict[str, str] = {}
    webhook_url: str | None = None
    rate: float = 1000.0
    burst: int = 1000


@final
@attrs.frozen
class Message:
    """An accepted send, as tests read it back (``received``)."""

    id: str
    kind: str
    recipient: str
    values: Mapping[str, object]


@final
@attrs.define(eq=False)
class _State:
    config: SpecNumber
    loaded: LoadedSpec
    constants: dict[str, object]
    shapes: list[Shape]
    gate: RateGate
    webhook_url: str | None
    counters: NumberCounters = attrs.field(factory=NumberCounters)
    received: collections.deque[Message] = attrs.field(factory=lambda: collections.deque(maxlen=100_000))
    retry_keys: dict[str, str] = attrs.field(factory=dict)
    tokens: dict[str, float] = attrs.field(factory=dict)  # login token -> wall time it lapses
    media: dict[str, tuple[bytes, str]] = attrs.field(factory=dict)

    @property
    def spec(self) -> Spec:
        return self.loaded.spec

    @property
    def digits(self) -> str:
        return self.config.number.lstrip("+")


@final
@attrs.frozen
class _Hook:
    """One webhook to post: a number's document, already built."""

    digits: str
    body: bytes
    params: tuple[tuple[str, str], ...]


@final
class SpecApi:
    """Every simulated number of a spec kind (see the module's docstring)."""

    def __init__(
        self,
        *,
        wall_clock: WallClock,
        faults: Faults,
        status_delays: tuple[float, float, float] | None,
        invalid_prefix: str,
        poster: Post | None = None,
        webhook_retries: int = 3,
        webhook_retry_delay: float = 0.2,
        webhook_timeout: float = 10.0,
    ) -> None:
        self._wall = wall_clock
        self._faults = faults
        self._delays = status_delays
        self._invalid_prefix = invalid_prefix
        self._numbers: dict[str, _State] = {}
        self._hooks: HookQueue[_Hook] = HookQueue(
            self._deliver,
            batch=1,
            concurrency=4,
            retries=webhook_retries,
            retry_delay=webhook_retry_delay,
            post_timeout=webhook_timeout,
            post=poster,
        )

    # -- numbers ----------------------------------------------------------------------

    def add_number(self, number: SpecNumber, loaded: LoadedSpec) -> None:
        """Serve ``number`` (of ``loaded``'s kind) from now on.

        Raises:
            ValueError: already served, or its spec has no ``[simulator]`` section.
        """
        digits = number.number.lstrip("+")
        if digits in self._numbers:
            raise ValueError(f"{number.number} is already simulated")
        if loaded.spec.simulator is None:
            raise ValueError(f"the {loaded.kind} spec has no [simulator] section")
        constants: dict[str, object] = {f"setting.{k}": v for k, v in number.settings.items()}
        constants.update({"from": number.number, "from_digits": digits})
        self._numbers[digits] = _State(
            config=number,
            loaded=loaded,
            constants=constants,
            shapes=shapes(loaded.spec, constants),
            gate=RateGate(number.rate, number.burst),
            webhook_url=number.webhook_url,
        )

    def remove_number(self, number: str) -> None:
        del self._numbers[number.lstrip("+")]

    def serves(self, digits: str) -> bool:
        return digits in self._numbers

    def numbers(self) -> list[str]:
        return [s.config.number for s in self._numbers.values()]

    def counters(self, number: str) -> NumberCounters:
        return self._state(number).counters.snapshot()

    def received(self, number: str) -> list[Message]:
        return list(self._state(number).received)

    def set_webhook_url(self, number: str, url: str | None) -> None:
        self._state(number).webhook_url = url

    def _state(self, number: str) -> _State:
        return self._numbers[number.lstrip("+")]

    # -- requests ---------------------------------------------------------------------

    def respond(self, digits: str, req: SimRequest, target: str) -> SimResponse:
        """Answer one request to number ``digits`` below its prefix (``target``: path and query)."""
        state = self._numbers[digits]
        spec = state.spec
        path, _, query = target.partition("?")
        login = spec.auth.login
        if login is not None and path == str(template.compile_text(login.path, state.constants)({})):
            return self._login(state, req)
        if spec.media_path is not None and req.method == "GET":
            prefix, _, suffix = spec.media_path.partition("{media_id}")
            if path.startswith(prefix) and path.endswith(suffix):
                return self._media(state, req, path[len(prefix) : len(path) - len(suffix)], query)
        if not self._authorized(state, req, target, query):
            state.counters.rejected_401 += 1
            return self.answer(state, "unauthorized", {})
        doc = decode(req.body, spec.send.format == "form")
        values = None
        shape = None
        for shape in state.shapes:
            try:
                values = match(shape, req.method, path, doc)
            except WrongSecretError:
                state.counters.rejected_401 += 1
                return self.answer(state, "unauthorized", {})
            if values is not None:
                break
        if values is None or shape is None:
            state.counters.rejected_400 += 1
            return self.answer(state, "invalid_request", {})
        recipient = str(values.get("to") or values.get("to_digits") or "")
        if not self._well_formed(state, recipient):
            state.counters.rejected_400 += 1
            return self.answer(state, "invalid_request", {})
        now = trio.current_time()
        if not state.gate.admit(now):
            state.counters.rejected_429 += 1
            return self.answer(state, "rate_limited", {"to": recipient})
        sim = spec.simulator
        assert sim is not None
        retry_key = self._retry_key(state, req)
        if retry_key is not None and sim.duplicate is not None and retry_key in state.retry_keys:
            return self.answer(state, "duplicate", {"id": state.retry_keys[retry_key], "to": recipient})
        unknown = self._not_on_channel(state, recipient)
        if unknown and not sim.failed_status:
            state.counters.rejected_400 += 1
            return self.answer(state, "invalid_recipient", {"to": recipient})
        msg_id = self._new_id(sim.id_prefix)
        if retry_key is not None:
            state.retry_keys[retry_key] = msg_id
        state.counters.accepted += 1
        key = recipient.lstrip("+")
        state.counters.by_recipient[key] = state.counters.by_recipient.get(key, 0) + 1
        state.received.append(Message(msg_id, shape.kind, recipient, values))
        if unknown:
            self._schedule(state, msg_id, recipient, [sim.failed_status], sim.failed_code)
        elif self._delays is not None:
            self._schedule(state, msg_id, recipient, sim.walk, "")
        return self.answer(
            state, "accepted", {"id": msg_id, "to": recipient, "sid": str(values.get("sid", ""))}
        )

    @staticmethod
    def _new_id(prefix: str) -> str:
        """``prefix`` and 32 random hex digits (a Twilio sid with ``SM``)."""
        return prefix + secrets.token_hex(16)

    def is_send(self, digits: str, method: str, path: str) -> bool:
        """A message send to number ``digits`` (what fault plans' rates and scripts apply to)."""
        return any(
            method == shape.method and shape.path.match(path) for shape in self._numbers[digits].shapes
        )

    def injected(
        self, digits: str, action: str | None, status: int, retry_after: float | None
    ) -> SimResponse:
        """The channel's own answer to an injected fault (throttle, unauthorized, a 5xx)."""
        state = self._numbers[digits]
        if action == "throttle":
            state.counters.rejected_429 += 1
            resp = self.answer(state, "rate_limited", {})
            if retry_after is not None:
                return SimResponse(
                    resp.status, [*resp.headers, ("retry-after", f"{retry_after:g}")], resp.body
                )
            return resp
        if action == "unauthorized":
            state.tokens.clear()
            state.counters.rejected_401 += 1
            return self.answer(state, "unauthorized", {})
        return SimResponse(
            status, [("content-type", "application/json")], b'{"message":"Injected server error"}'
        )

    def answer(self, state: _State, name: str, values: Mapping[str, object]) -> SimResponse:
        """The spec's ``[simulator.NAME]`` answer with ``values`` (id, to...) filled in."""
        sim = state.spec.simulator
        assert sim is not None
        given: SimAnswer | None = getattr(sim, name)
        if given is None:
            return SimResponse(500, [], b"")
        fill = {
            **values,
            "to_digits": str(values.get("to", "")).lstrip("+"),
            "request_id": secrets.token_hex(8),
        }
        constants = {**state.constants, **fill}
        if isinstance(given.body, str):
            body = str(template.compile_text(given.body, constants)({})).encode()
        else:
            body = msgspec.json.encode(template.compile_tree(given.body, constants)({}))
        headers = [(k, str(template.compile_text(v, constants)({}))) for k, v in given.headers.items()]
        return SimResponse(given.status, headers, body)

    def _login(self, state: _State, req: SimRequest) -> SimResponse:
        login = state.spec.auth.login
        assert login is not None
        expected = template.compile_tree(login.body, state.constants)({})
        doc = decode(req.body, login.format == "form")
        if (
            not isinstance(doc, dict)
            or not isinstance(expected, dict)
            or any(str(doc.get(k)) != str(v) for k, v in expected.items())
        ):
            state.counters.rejected_401 += 1
            return SimResponse(401, [("content-type", "application/json")], b'{"error":"invalid_client"}')
        token = secrets.token_urlsafe(24)
        state.tokens[token] = self._wall.now() + TOKEN_TTL
        state.counters.logins += 1
        answer: dict[str, object] = {}
        paths.parse(login.token_path).put(answer, token)
        if login.expires_in_path is not None:
            paths.parse(login.expires_in_path).put(answer, TOKEN_TTL)
        return SimResponse(200, [("content-type", "application/json")], msgspec.json.encode(answer))

    def revoke_tokens(self, number: str) -> int:
        state = self._state(number)
        count = len(state.tokens)
        state.tokens.clear()
        return count

    def _authorized(self, state: _State, req: SimRequest, target: str, query: str) -> bool:
        auth = state.spec.auth
        constants = state.constants

        def fill(text: str | None) -> str:
            return "" if text is None else str(template.compile_text(text, constants)({}))

        given = req.headers.get("authorization", "")
        match auth.type:
            case "none":
                return True
            case "basic":
                pair = f"{fill(auth.username)}:{fill(auth.password)}".encode()
                return hmac.compare_digest(given, "Basic " + base64.b64encode(pair).decode())
            case "bearer":
                if auth.login is not None:
                    lapses = state.tokens.get(given[7:]) if given.startswith("Bearer ") else None
                    return lapses is not None and self._wall.now() < lapses
                return hmac.compare_digest(given, "Bearer " + fill(auth.token))
            case "header":
                return hmac.compare_digest(req.headers.get((auth.name or "").lower(), ""), fill(auth.value))
            case "query":
                found = dict(parse_qsl(query)).get(auth.name or "")
                return found is not None and hmac.compare_digest(found, fill(auth.value))
            case "hmac":
                stamp = req.headers.get((auth.timestamp_header or "").lower(), "")
                message = template.compile_text(auth.message, {})(
                    {
                        "method": req.method,
                        "path": target,
                        "body": req.body.decode(errors="replace"),
                        "timestamp": stamp,
                    }
                )
                digest = hmac.new(fill(auth.key).encode(), str(message).encode(), auth.algorithm).digest()
                encoded = digest.hex() if auth.encoding == "hex" else base64.b64encode(digest).decode()
                header = req.headers.get((auth.header or "").lower(), "")
                return hmac.compare_digest(header, auth.prefix + encoded)

    def _retry_key(self, state: _State, req: SimRequest) -> str | None:
        """The value of a send header carrying our sid (LINE's ``X-Line-Retry-Key``)."""
        for name, value in state.spec.send.headers.items():
            if "{sid" in value:
                return req.headers.get(name.lower())
        return None

    def _well_formed(self, state: _State, recipient: str) -> bool:
        loaded = state.loaded
        if loaded.recipient is not None:
            return loaded.recipient.fullmatch(recipient) is not None
        digits = recipient.lstrip("+")
        return digits.isdigit() and 6 <= len(digits) <= 15

    def _not_on_channel(self, state: _State, recipient: str) -> bool:
        sim = state.spec.simulator
        assert sim is not None
        if state.loaded.recipient is not None:
            return bool(sim.invalid_recipient_prefix) and recipient.startswith(sim.invalid_recipient_prefix)
        return recipient.lstrip("+").startswith(self._invalid_prefix)

    def _media(self, state: _State, req: SimRequest, media_id: str, query: str) -> SimResponse:
        if not self._authorized(state, req, req.target, query):
            state.counters.rejected_401 += 1
            return self.answer(state, "unauthorized", {})
        found = state.media.get(media_id)
        if found is None:
            return SimResponse(404, [("content-type", "application/json")], b'{"message":"Not found"}')
        data, mime_type = found
        return SimResponse(200, [("content-type", mime_type)], data)

    # -- webhooks -----------------------------------------------------------------------

    def inbound_text(self, number: str, sender: str, body: str) -> str:
        """Make ``sender`` send ``body`` to ``number``; returns the message id.

        Raises:
            KeyError: unknown number. LookupError: no webhook URL or no [webhook.inbound].
        """
        return self._inbound(self._state(number), sender, "text", body, None)

    def inbound_media(
        self, number: str, sender: str, kind: str, data: bytes, mime_type: str
    ) -> tuple[str, str]:
        """Make ``sender`` send a media file of the channel's type ``kind``; returns (id, media id)."""
        state = self._state(number)
        media_id = self._new_id("")
        state.media[media_id] = (data, mime_type)
        return self._inbound(state, sender, kind, "", (media_id, mime_type)), media_id

    def _inbound(
        self, state: _State, sender: str, kind: str, body: str, media: tuple[str, str] | None
    ) -> str:
        hook = state.spec.webhook
        sim = state.spec.simulator
        if hook is None or hook.inbound is None or sim is None:
            raise LookupError(f"the {state.loaded.kind} spec has no [webhook.inbound]")
        if state.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        inbound = hook.inbound
        msg_id = self._new_id(sim.id_prefix)
        item = self._document(state, sim.inbound_document, {"id": msg_id, "to": sender})
        paths.parse(inbound.id).put(item, msg_id)
        paths.parse(inbound.sender).put(item, sender if state.loaded.recipient else sender.lstrip("+"))
        if inbound.when is not None:
            paths.parse(inbound.when.path).put(item, inbound.when.equals[0] if inbound.when.equals else "1")
        if inbound.text is not None and body:
            paths.parse(inbound.text).put(item, body)
        if inbound.kind is not None:
            paths.parse(inbound.kind).put(item, kind)
        if media is not None and inbound.media_id is not None:
            paths.parse(inbound.media_id).put(item, media[0])
            if inbound.media_type is not None:
                paths.parse(inbound.media_type).put(item, media[1])
        if inbound.timestamp is not None:
            paths.parse(inbound.timestamp).put(item, self._timestamp(inbound.timestamp_unit))
        self._push(state, inbound.items, item, trio.current_time())
        return msg_id

    def emit_status(
        self, number: str, msg_id: str, status: str, *, recipient: str = "", code: str = ""
    ) -> None:
        """Post the channel's status ``status`` for ``msg_id`` now (any path a test needs)."""
        state = self._state(number)
        self._schedule(state, msg_id, recipient, [status], code, now=True)

    def _schedule(
        self, state: _State, msg_id: str, recipient: str, walk: list[str], code: str, *, now: bool = False
    ) -> None:
        hook = state.spec.webhook
        sim = state.spec.simulator
        if hook is None or hook.status is None or sim is None or state.webhook_url is None:
            return
        status = hook.status
        plan = self._faults.webhook_plan(state.digits)
        delay = plan.webhook_delay if plan is not None else 0.0
        start = trio.current_time()
        for i, name in enumerate(walk):
            item = self._document(state, sim.status_document, {"id": msg_id, "to": recipient})
            paths.parse(status.id).put(item, msg_id)
            paths.parse(status.status).put(item, name)
            if status.when is not None and status.when.equals:
                paths.parse(status.when.path).put(item, status.when.equals[0])
            if status.recipient is not None:
                paths.parse(status.recipient).put(
                    item, recipient if state.loaded.recipient else recipient.lstrip("+")
                )
            if status.error_code is not None and code and i == len(walk) - 1:
                paths.parse(status.error_code).put(item, code)
            delays = self._delays or (0.0,)
            due = start + (0.0 if now else delays[min(i, len(delays) - 1)]) + delay
            self._push(state, status.items, item, due)

    def _document(
        self, state: _State, base: Mapping[str, object], values: Mapping[str, object]
    ) -> dict[str, object]:
        constants = {**state.constants, **values, "to_digits": str(values.get("to", "")).lstrip("+")}
        doc = template.compile_tree(dict(base), constants)({})
        assert isinstance(doc, dict)
        return doc

    def _timestamp(self, unit: str) -> object:
        now = self._wall.now()
        if unit == "ms":
            return int(now * 1000)
        if unit == "datetime":
            return gateway_time(now)
        return int(now)

    def _push(self, state: _State, items: str, item: dict[str, object], due: float) -> None:
        hook = state.spec.webhook
        assert hook is not None
        if items:
            doc: dict[str, object] = {}
            paths.parse(items).put(doc, [item])
            sim = state.spec.simulator
            assert sim is not None
            for key, value in self._document(state, sim.envelope, {}).items():
                doc.setdefault(key, value)
        else:
            doc = item
        if hook.format == "form":
            params = tuple((str(k), "" if v is None else str(v)) for k, v in doc.items())
            body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params).encode()
        else:
            params = ()
            body = msgspec.json.encode(doc)
        job = _Hook(state.digits, body, params)
        self._hooks.push(state.digits, due, job)
        plan = self._faults.webhook_plan(state.digits)
        if plan is not None and self._faults.chance(plan.webhook_duplicate_rate):
            self._faults.count(state.digits, "webhook_duplicate")
            self._hooks.push(state.digits, due, job)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post webhooks until cancelled."""
        await self._hooks.run(task_status=task_status)

    async def _deliver(self, shard: Shard[_Hook], jobs: list[_Hook], post: Post) -> None:
        for job in jobs:
            state = self._numbers.get(job.digits)
            if state is None:
                continue
            delivered = await self._hooks.post(job.digits, functools.partial(self._target, job), post)
            if delivered is None:
                continue
            if delivered:
                state.counters.webhooks_sent += 1
            else:
                state.counters.webhooks_failed += 1

    def _target(self, job: _Hook) -> Target | None:
        state = self._numbers.get(job.digits)
        if state is None or state.webhook_url is None or state.spec.webhook is None:
            return None
        hook = state.spec.webhook
        url = state.webhook_url
        headers: Headers = [_FORM if hook.format == "form" else _JSON]
        sig = hook.signature
        if sig.scheme == "hmac" and sig.key is not None and sig.header is not None:
            key = str(template.compile_text(sig.key, state.constants)({}))
            value = signing.signature(sig, key, job.body, url, job.params)
            headers.append((sig.header.lower().encode(), value.encode()))
        return Target(url, job.body, headers)


def gateway_time(now: float) -> str:
    """Unix seconds as ``YYYY-MM-DD hh:mm:ss`` (UTC), as SMS gateways write times."""
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
