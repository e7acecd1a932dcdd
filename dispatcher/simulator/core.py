"""The sans-IO WhatsApp On-Premises API simulator: every behaviour, no sockets.

``Simulator.handle(SimRequest) -> SimResponse`` is the whole API; the h11
server (``server.py``) and the in-process transport (``transport.py``) are thin
adapters over it, so tests drive it under ``MockClock`` with no I/O. Request
rates and webhook delays use ``trio.current_time()``; token expiry and payload
timestamps use the injectable wall clock (``TrioWallClock`` by default, which
follows trio's clock and can be advanced by days).

Each number is served under the path prefix of its digits
(``/15550000001/v1/messages``) and the control API under ``/_sim/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final, final

import trio

from dispatcher.core.channelspec.load import Registry, load_registry
from dispatcher.core.clock import TrioWallClock, WallClock
from dispatcher.simulator import cloud_control, control, errors, graph_control, spec_control, waba_control
from dispatcher.simulator.cloud import CloudApi, SignedPoster
from dispatcher.simulator.config import DEFAULT_INVALID_PREFIX, SimNumber, checked, digits_of
from dispatcher.simulator.endpoints import NumberApi
from dispatcher.simulator.errors import ApiError
from dispatcher.simulator.exchange import SimRequest, SimResponse, error_response
from dispatcher.simulator.faults import Decision, Faults, Refused, Reset, ResponseDropped, split_prefix
from dispatcher.simulator.graph_numbers import GraphNumbers
from dispatcher.simulator.graph_templates import GraphTemplates
from dispatcher.simulator.graph_versions import GraphVersions
from dispatcher.simulator.hook_queue import Post
from dispatcher.simulator.ids import IdMaker
from dispatcher.simulator.onprem_account import Account, Accounts
from dispatcher.simulator.spec_api import SpecApi, SpecNumber
from dispatcher.simulator.state import NumberCounters, NumberState, Received, SenderRun, to_received
from dispatcher.simulator.webhooks import Poster, WebhookSender
from dispatcher.simulator.wire import (
    MEDIA_TYPES,
    InboundButton,
    InboundContact,
    InboundContext,
    InboundInteractive,
    InboundLocation,
    InboundMedia,
    InboundMessage,
    InboundType,
    Profile,
    Status,
    StatusError,
    StatusWebhook,
    Text,
    encode,
)

STATUS_DELAYS: Final = (0.0, 0.05, 0.1)


@final
class Simulator:
    """A fake WhatsApp Business On-Premises API serving any number of business numbers.

    Create it inside a trio run (the default wall clock anchors to trio's
    clock); run ``run()`` in a nursery for webhooks to be posted.

    Args:
        numbers: the numbers served from the start (more via ``add_number``).
        wall_clock: source of token expiry and payload timestamps.
        status_delays: seconds after acceptance of the ``sent``, ``delivered``
            and ``read`` webhooks; ``None`` sends no status webhooks.
        webhook_batch: most statuses in one webhook POST.
        webhook_concurrency: webhook worker tasks of On-Prem numbers (ordering holds per recipient);
            Cloud numbers have one, so their batches fill while its POST is in flight.
        webhook_queue_size: messages awaiting webhooks beyond which more are
            dropped and counted (``webhooks_dropped``).
        poster: ``await poster(url, body) -> status``; default keep-alive H11Pools (``poster.py``).
        webhook_retries: extra attempts of a failed webhook POST before it is dropped
            (``webhooks_failed``); backoff starts at ``webhook_retry_delay`` and doubles.
        webhook_timeout: seconds one webhook POST may take.
        invalid_prefix: recipients whose digits start with it are not
            WhatsApp users (accepted, then a ``failed`` status with 1013).
        received_limit: messages kept per number for ``received()``.
        media_limit: media files kept per number (oldest evicted first).
        fault_seed: seeds the RNG of injected faults (``self.faults``), for repeatable runs.
    """

    def __init__(
        self,
        numbers: Iterable[SimNumber] = (),
        *,
        wall_clock: WallClock | None = None,
        status_delays: tuple[float, float, float] | None = STATUS_DELAYS,
        webhook_batch: int = 1,
        webhook_concurrency: int = 4,
        webhook_queue_size: int = 100_000,
        poster: Poster | None = None,
        webhook_retries: int = 3,
        webhook_retry_delay: float = 0.2,
        webhook_timeout: float = 10.0,
        invalid_prefix: str = DEFAULT_INVALID_PREFIX,
        received_limit: int = 100_000,
        media_limit: int = 1_000,
        fault_seed: int | None = None,
        cloud_poster: SignedPoster | None = None,
        spec_poster: Post | None = None,
        channels: Registry | None = None,
    ) -> None:
        self.faults = Faults(seed=fault_seed)
        self._wall = wall_clock if wall_clock is not None else TrioWallClock()
        self._numbers: dict[str, NumberState] = {}
        self._webhooks = WebhookSender(
            self._numbers,
            self._wall,
            status_delays=status_delays,
            batch=webhook_batch,
            concurrency=webhook_concurrency,
            queue_size=webhook_queue_size,
            poster=poster,
            retries=webhook_retries,
            retry_delay=webhook_retry_delay,
            post_timeout=webhook_timeout,
            faults=self.faults,
        )
        self._received_limit = received_limit
        self._media_limit = media_limit
        self._ids = IdMaker()
        self._api = NumberApi(
            wall_clock=self._wall,
            webhooks=self._webhooks,
            ids=self._ids,
            invalid_prefix=invalid_prefix,
            accounts=Accounts(seed=fault_seed),
        )
        # WABAs' message templates (Graph's /{version}/{waba}/message_templates) and Meta's review;
        # their webhooks go out by the webhook URL of the WABA's Cloud numbers.
        self.templates = GraphTemplates(
            wall_clock=self._wall,
            post_change=lambda waba, field, value: self.cloud.emit_field(waba, field, value),
        )
        # Cloud API (Graph) numbers, served under /{version}/{phone-number-id}/...
        self.cloud = CloudApi(
            wall_clock=self._wall,
            ids=self._ids,
            status_delays=status_delays,
            poster=cloud_poster,
            invalid_prefix=invalid_prefix,
            webhook_retries=webhook_retries,
            webhook_retry_delay=webhook_retry_delay,
            webhook_batch=webhook_batch,
            received_limit=received_limit,
            waba_templates=self.templates,
        )
        # Graph number management (WABAs, registration, profile) and the version that serves a call.
        self.graph_numbers = GraphNumbers(cloud=self.cloud, wall_clock=self._wall, seed=fault_seed)
        self.graph_versions = GraphVersions()
        # Numbers of spec-described channels (LINE, SMS providers...), served under their digits.
        self.specs = SpecApi(
            wall_clock=self._wall,
            faults=self.faults,
            status_delays=status_delays,
            invalid_prefix=invalid_prefix,
            poster=spec_poster,
            webhook_retries=webhook_retries,
            webhook_retry_delay=webhook_retry_delay,
            webhook_timeout=webhook_timeout,
        )
        self._channels = channels
        for number in numbers:
            self.add_number(number)

    def _post_waba_change(self, waba: str, field: str, value: dict[str, Any]) -> bool:
        return self.cloud.emit_field(waba, field, value)

    # ------------------------------------------------------------------ numbers and state

    @property
    def wall_clock(self) -> WallClock:
        return self._wall

    @staticmethod
    def endpoint_path(number: str) -> str:
        """The path prefix serving ``number``: ``"+15550000001"`` -> ``"/15550000001"``."""
        return "/" + digits_of(number)

    def add_number(self, number: SimNumber) -> None:
        """Serve ``number`` from now on.

        Raises:
            msgspec.ValidationError: a field breaks its constraint.
            ValueError: the number is already served.
        """
        number = checked(number)
        if number.digits in self._numbers:
            raise ValueError(f"{number.number} is already simulated")
        self._numbers[number.digits] = NumberState.create(
            number, received_limit=self._received_limit, media_limit=self._media_limit
        )

    def add_spec_number(self, number: SpecNumber) -> None:
        """Serve a number of a spec-described channel kind (``number.kind``) from now on.

        Raises:
            KeyError: no spec of that kind. ValueError: already served (by any mode), or the
            spec has no [simulator] section.
        """
        if self._channels is None:
            self._channels = load_registry()
        loaded = self._channels.get(number.kind)
        if loaded is None:
            raise KeyError(f"no channel spec of kind {number.kind!r}")
        if digits_of(number.number) in self._numbers:
            raise ValueError(f"{number.number} is already simulated")
        self.specs.add_number(number, loaded)

    def remove_number(self, number: str) -> None:
        """Stop serving ``number``: its tokens, counters and pending webhooks are dropped."""
        del self._numbers[self._digits(number)]

    def numbers(self) -> list[str]:
        return [state.config.number for state in self._numbers.values()]

    def counters(self, number: str) -> NumberCounters:
        """A snapshot of ``number``'s counters."""
        return self._state(number).counters.snapshot()

    def all_counters(self) -> dict[str, NumberCounters]:
        """Every number's counters: On-Prem and spec-described ones."""
        counters = {state.config.number: state.counters.snapshot() for state in self._numbers.values()}
        counters.update({number: self.specs.counters(number) for number in self.specs.numbers()})
        return counters

    def received(self, number: str) -> list[Received]:
        """Accepted messages of ``number`` in arrival order (the last ``received_limit``)."""
        return [to_received(entry) for entry in self._state(number).received]

    def senders(self, number: str) -> list[SenderRun]:
        """Who sent for ``number``: runs of consecutive sends from one client, in arrival order."""
        return list(self._state(number).senders)

    def reset(self) -> None:
        """Zero every counter and forget received messages; tokens and settings stay."""
        for state in self._numbers.values():
            state.counters = NumberCounters()
            state.received.clear()
            state.senders.clear()

    def set_webhook_url(self, number: str, url: str | None) -> None:
        self._state(number).webhook_url = url

    def advance_clock(self, seconds: float) -> float:
        """Move the wall clock forward (tokens expire without waiting); returns its new time.

        Raises:
            TypeError: the wall clock is not a ``TrioWallClock``.
        """
        if not isinstance(self._wall, TrioWallClock):
            raise TypeError("only a TrioWallClock can be advanced")
        self._wall.advance(seconds)
        return self._wall.now()

    @property
    def webhooks_pending(self) -> int:
        return self._webhooks.pending

    # ------------------------------------------------------------------ customers and media

    def inbound_text(
        self, number: str, sender: str, body: str, *, profile_name: str = "Customer", repeat: int = 1
    ) -> str:
        """Make customer ``sender`` send ``body`` to ``number``; returns the message id.

        Raises:
            KeyError: unknown number.
            LookupError: the number has no webhook URL (the real platform holds it; we cannot).
        """
        state = self._state(number)
        message = InboundMessage(
            sender=digits_of(sender),
            id=self._ids.new("ABGG"),
            timestamp=self._timestamp(),
            type="text",
            text=Text(body),
        )
        return self._push_inbound(state, message, profile_name, repeat)

    def inbound_message(
        self,
        number: str,
        sender: str,
        kind: InboundType,
        *,
        location: InboundLocation | None = None,
        contacts: list[dict[str, object]] | None = None,
        button: InboundButton | None = None,
        interactive: InboundInteractive | None = None,
        context: InboundContext | None = None,
        profile_name: str = "Customer",
        repeat: int = 1,
    ) -> str:
        """Make ``sender`` send a location, shared contacts, or a button / interactive reply.

        The object matching ``kind`` must be given. Raises like ``inbound_text``, and
        ValueError when the object for ``kind`` is missing.
        """
        state = self._state(number)
        given = {"location": location, "contacts": contacts, "button": button, "interactive": interactive}
        if given.get(kind) is None:
            raise ValueError(f"a {kind!r} message needs its {kind!r} object")
        message = InboundMessage(
            sender=digits_of(sender),
            id=self._ids.new("ABGG"),
            timestamp=self._timestamp(),
            type=kind,
            location=location if kind == "location" else None,
            contacts=contacts if kind == "contacts" else None,
            button=button if kind == "button" else None,
            interactive=interactive if kind == "interactive" else None,
            context=context,
        )
        return self._push_inbound(state, message, profile_name, repeat)

    def emit_status(
        self,
        number: str,
        msg_id: str,
        status: str,
        *,
        recipient: str = "",
        errors: list[StatusError] | None = None,
        repeat: int = 1,
    ) -> None:
        """Post one status webhook for ``msg_id`` now, ``repeat`` times (out of order, redelivered,
        ``deleted``, a status the platform added later: any path).

        Raises:
            KeyError: unknown number.
            LookupError: the number has no webhook URL.
        """
        state = self._state(number)
        if state.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        item = Status(
            msg_id, digits_of(recipient) if recipient else "", status, self._timestamp(), errors=errors
        )
        body = encode(StatusWebhook(statuses=[item]))
        for _ in range(repeat):
            self._webhooks.push_raw(state, body)

    def emit_webhook(self, number: str, body: bytes, *, repeat: int = 1) -> None:
        """Post ``body`` (any webhook object, e.g. a shape recorded from the real platform) now,
        ``repeat`` times.

        Raises:
            KeyError: unknown number.
            LookupError: the number has no webhook URL.
        """
        state = self._state(number)
        if state.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        for _ in range(repeat):
            self._webhooks.push_raw(state, body)

    def inbound_media(
        self,
        number: str,
        sender: str,
        data: bytes,
        mime_type: str,
        *,
        caption: str | None = None,
        filename: str | None = None,
        profile_name: str = "Customer",
        kind: InboundType | None = None,
        context: InboundContext | None = None,
        repeat: int = 1,
    ) -> tuple[str, str]:
        """Make ``sender`` send a media file; returns ``(message id, media id)``.

        ``kind`` overrides the type the MIME type implies ("sticker", "voice").
        The bytes are then served at ``GET /v1/media/{media id}``. Raises like ``inbound_text``.
        """
        state = self._state(number)
        if kind is not None and kind not in MEDIA_TYPES:
            raise ValueError(f"{kind!r} is not a media type")
        media_id = state.store_media(data, mime_type)
        kind = kind or _media_type(mime_type)
        media = InboundMedia(
            id=media_id,
            mime_type=mime_type,
            sha256=hashlib.sha256(data).hexdigest(),
            caption=caption if kind in ("image", "video", "document") else None,
            filename=filename if kind == "document" else None,
        )
        message = InboundMessage(
            sender=digits_of(sender),
            id=self._ids.new("ABGG"),
            timestamp=self._timestamp(),
            type=kind,
            image=media if kind == "image" else None,
            video=media if kind == "video" else None,
            audio=media if kind == "audio" else None,
            voice=media if kind == "voice" else None,
            document=media if kind == "document" else None,
            sticker=media if kind == "sticker" else None,
            context=context,
        )
        return self._push_inbound(state, message, profile_name, repeat), media_id

    def store_media(self, number: str, data: bytes, mime_type: str) -> str:
        """Keep ``data`` for ``GET /v1/media/{id}``; returns the new UUID media id."""
        return self._state(number).store_media(data, mime_type)

    def _push_inbound(
        self, state: NumberState, message: InboundMessage, profile_name: str, repeat: int = 1
    ) -> str:
        """Post the message now, ``repeat`` times in all (a redelivery is the same message again)."""
        if state.webhook_url is None:
            raise LookupError(f"{state.config.number} has no webhook URL")
        contact = InboundContact(profile=Profile(name=profile_name), wa_id=message.sender)
        for _ in range(repeat):
            self._webhooks.push_inbound(state, contact, message)
        return message.id

    # ------------------------------------------------------------------ request handling

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Post webhooks until cancelled; run it once per simulator."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.cloud.run)
            await nursery.start(self.specs.run)
            await nursery.start(self._webhooks.run)
            task_status.started()

    async def handle(self, req: SimRequest) -> SimResponse:
        """Answer one request. Never raises for a bad request: errors are responses.

        Raises:
            InjectedFault: a fault plan says the connection is refused, reset, or
                its answer is dropped; the adapter acts it out on its connection.
        """
        if self.faults:
            decision = self._decide(req)
            if decision.delay:
                await trio.sleep(decision.delay)
            if decision.action is not None:
                return self._inject(decision, req)
        return self.respond(req)

    def respond(self, req: SimRequest) -> SimResponse:
        """``handle`` without the coroutine, for callers already in a task."""
        path, _, query = req.target.partition("?")
        if path.startswith("/_sim/spec/"):
            return spec_control.handle(self, req.method, path[11:], query, req.body)
        if path.startswith("/_sim/cloud/"):
            return cloud_control.handle(self.cloud, req.method, path[12:], req.body)
        if path == "/_sim/wabas" or path.startswith("/_sim/wabas/"):
            return waba_control.handle(self.templates, req.method, path[11:], req.body)
        if path.startswith("/_sim/graph/"):
            return graph_control.handle(
                self.graph_numbers, self.graph_versions, req.method, path[12:], req.body
            )
        if path.startswith("/_sim/"):
            return control.handle(self, req.method, path[6:], query, req.body)
        if path.startswith("/v"):  # Graph: /v23.0/{phone-number-id}/messages (digits never start with v)
            return self._graph(req, path, query)
        slash = path.find("/", 1)
        digits = split_prefix(path[1:slash])[0] if slash > 0 else ""
        if self.specs.serves(digits):
            return self.specs.respond(digits, req, req.target[slash:])
        state = self._numbers.get(digits)
        if state is None:
            return error_response(errors.not_found(f"No number is served at {path!r}"))
        return self._api.dispatch(state, req, path[slash:])

    def _graph(self, req: SimRequest, path: str, query: str) -> SimResponse:
        """A Graph call: templates, number management, then messages; stamped with the version
        that serves it (``facebook-api-version``)."""
        version, _, rest = path[1:].partition("/")
        parts = rest.split("/") if rest else []
        resp: SimResponse | None = None
        if self.templates.serves(path):
            resp = self.templates.respond(req, path, query)
        elif parts[-1:] != ["messages"]:
            resp = self.graph_numbers.respond(req, parts)
        if resp is None:
            resp = self.cloud.respond(req, path)
        return self.graph_versions.stamp(version, resp)

    def account(self, number: str) -> Account:
        """An On-Prem number's registration (``POST /v1/account``): its code, once one was sent."""
        return self._api.accounts.of(self._state(number).config.number)

    def revoke_tokens(self, number: str) -> int:
        """Revoke every live token of ``number`` early (its next request gets 401); returns how many."""
        return self._state(number).tokens.revoke_all()

    def _decide(self, req: SimRequest) -> Decision:
        path = req.target.partition("?")[0]
        slash = path.find("/", 1)
        if path.startswith(("/_sim/", "/v")) or slash <= 0:
            return Decision(0.0, None)
        digits, endpoint = split_prefix(path[1:slash])
        if self.specs.serves(digits):
            sends = self.specs.is_send(digits, req.method, path[slash:])
            return self.faults.decide(digits, endpoint, req.method, path[slash:], sends=sends)
        if digits not in self._numbers:
            return Decision(0.0, None)
        return self.faults.decide(digits, endpoint, req.method, path[slash:])

    def _inject(self, decision: Decision, req: SimRequest) -> SimResponse:
        match decision.action:
            case "refuse":
                raise Refused("injected: connection refused")
            case "reset":
                raise Reset("injected: connection reset")
            case "drop":
                self.respond(req)  # the API acts on it; the answer never arrives
                raise ResponseDropped("injected: response dropped")
        digits = split_prefix(req.target[1:].partition("/")[0])[0]
        if self.specs.serves(digits):
            return self.specs.injected(digits, decision.action, decision.status, decision.retry_after)
        state = self._numbers[digits]
        if decision.action == "throttle":
            state.counters.rejected_429 += 1
            resp = error_response(ApiError(429, errors.TOO_MANY_REQUESTS, "Injected rate limit"))
            if decision.retry_after is not None:
                return SimResponse(
                    429, [*resp.headers, ("retry-after", f"{decision.retry_after:g}")], resp.body
                )
            return resp
        if decision.action == "unauthorized":
            state.tokens.revoke_all()
            state.counters.rejected_401 += 1
            return error_response(errors.unauthorized())
        return error_response(ApiError(decision.status, errors.INTERNAL_ERROR, "Injected server error"))

    # ------------------------------------------------------------------ helpers

    def _state(self, number: str) -> NumberState:
        return self._numbers[self._digits(number)]

    def _digits(self, number: str) -> str:
        digits = digits_of(number)
        if digits not in self._numbers:
            raise KeyError(f"{number!r} is not simulated")
        return digits

    def _timestamp(self) -> str:
        return str(int(self._wall.now()))


def _media_type(mime_type: str) -> InboundType:
    major = mime_type.partition("/")[0]
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    return "document"
