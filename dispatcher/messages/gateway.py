"""The gateway: what the HTTP routes call. Validates, commits, hands off to actors.

Kept apart from the web framework so it is tested directly, and so every
intake path (Twilio form, JSON, batch) shares one set of rules.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol, final

import attrs
import structlog

from actors.supervisor import Supervisor
from dispatcher.core import ledger, orphans, parts, segments, window
from dispatcher.core.clock import WallClock
from dispatcher.core.events import WebhookEvents
from dispatcher.core.models import MessageRecord, TemplateSend, new_sid, new_sids
from dispatcher.core.ssrf import RefusedURLError, check_host, check_syntax
from dispatcher.core.store import Store, StoreError, WriteTxn
from dispatcher.core.twilio import CHANNEL_PREFIX, TwilioError
from dispatcher.messages import idempotency, scheduler
from dispatcher.messages.auth import ApiKey, Authenticator
from dispatcher.messages.compose import Content, compose, text_content
from dispatcher.messages.compose import apply as apply_content
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.webhooks.inbox import Applied, Inbox

if TYPE_CHECKING:
    from actors.number import NumberActor

log = structlog.get_logger()

MAX_BODY: Final = 1600  # Twilio's limit for a (concatenated) message body
_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Parsed addresses kept (cleared when full): senders and repeat recipients parse once.
_ADDRESS_CACHE: Final = 4096


@attrs.frozen
class CloudHook:
    """How a Cloud API number's webhooks are checked: Meta's app secret and our verify token."""

    phone_number_id: str
    app_secret: str = attrs.field(repr=False)
    verify_token: str = attrs.field(repr=False)


@attrs.frozen
class NumberInfo:
    number: str
    account_sid: str
    webhook_secret: str
    status_callback: str | None = None
    inbound_url: str | None = None
    webhook_auth: str = "path"  # "path" | "header": where WhatsApp's webhooks carry the secret
    webhook_header: str = "X-Webhook-Secret"
    cloud: CloudHook | None = None  # a Cloud API number (its webhooks come to /webhooks/cloud/...)
    # Free-form only inside the customer's 24 h window (63016). The config's default is
    # on (off for simulated numbers): see fleet.number_info.
    enforce_window: bool = False


@attrs.frozen
class SendRequest:
    """A create request after form/JSON decoding, before validation."""

    to: str | None
    from_: str | None
    body: str | None
    status_callback: str | None = None
    media_urls: Sequence[str] = ()
    content_sid: str | None = None
    content_variables: str | None = None
    validity_period: str | None = None
    send_at: str | None = None
    schedule_type: str | None = None
    messaging_service_sid: str | None = None


class PlainSend(Protocol):
    """A create with only To, From, Body and StatusCallback: an item of the batch route."""

    @property
    def to(self) -> str | None: ...
    @property
    def from_(self) -> str | None: ...
    @property
    def body(self) -> str | None: ...
    @property
    def status_callback(self) -> str | None: ...


def parse_address(value: str, *, field: str, code: int) -> str:
    """``whatsapp:+15551234567`` (or bare E.164) -> ``+15551234567``."""
    raw = value.strip()
    if raw.startswith(CHANNEL_PREFIX):
        raw = raw[len(CHANNEL_PREFIX) :]
    if not _E164.match(raw):
        raise TwilioError(400, code, f"The '{field}' number {value} is not a valid phone number.")
    return raw


def _missing_to() -> TwilioError:
    return TwilioError(400, 21604, "A 'To' phone number is required.")


def _missing_from() -> TwilioError:
    return TwilioError(400, 21603, "A 'From' phone number is required.")


def _same_number(raw_to: str) -> TwilioError:
    return TwilioError(400, 21211, f"The 'To' number {raw_to} cannot be the same as the 'From' number.")


def _outside_window() -> TwilioError:
    return TwilioError(
        400,
        63016,
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template.",
    )


def _check_callback(url: str) -> None:
    """Twilio's rules for a StatusCallback (21609): an absolute http(s) URL whose host is a
    DNS name without underscores or an IP literal, and a real port. Its origin becomes the
    key of its delivery queue, so this also bounds that key."""
    try:
        parts = check_syntax(url)
        check_host(parts.hostname or "")
        if parts.port == 0:
            raise RefusedURLError("port 0 cannot be reached")
    except RefusedURLError as exc:
        raise TwilioError(400, 21609, f"Invalid StatusCallback: {exc}") from exc


@final
class Gateway:
    def __init__(
        self,
        *,
        store: Store,
        supervisor: Supervisor,
        accounts: Mapping[str, str],
        numbers: Mapping[str, NumberInfo],
        wall: WallClock,
        inbox: Inbox | None = None,
        api_keys: Mapping[str, ApiKey] | None = None,
        templates: TemplateRegistry | None = None,
        services: Services | None = None,
        max_body: int = MAX_BODY,
        media_guard: MediaGuard | None = None,
        orphan_limits: orphans.Limits | None = None,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self._addresses: dict[str, str] = {}
        self.configure(accounts, numbers, api_keys)
        self.wall = wall
        # Numbers being drained by an operator: no new messages for them.
        self.draining: set[str] = set()
        # Without a configured file: only the templates added through the admin API.
        self.templates = templates if templates is not None else TemplateRegistry(store)
        self.services = services or Services((), store)
        self.max_body = max_body
        # SSRF check of MediaUrl hosts at create (the daemon always sets one).
        self.media_guard = media_guard
        self.scheduler = scheduler.Scheduler(
            store=store, wall=wall, notify=self._notify_part, blocked=self._window_blocks
        )
        self.inbox = inbox or Inbox(
            store=store,
            wall=wall,
            public_url=lambda: "",
            numbers=self.numbers.get,
            notify=self._notify,
            on_status=self._note_status,
            orphan_limits=orphan_limits or orphans.Limits(),
        )

    def configure(
        self,
        accounts: Mapping[str, str],
        numbers: Mapping[str, NumberInfo],
        api_keys: Mapping[str, ApiKey] | None = None,
        *,
        webhooks_only: Mapping[str, NumberInfo] | None = None,
    ) -> None:
        """Install the accounts, API keys and numbers of a (re)loaded config.

        ``webhooks_only``: numbers removed by a reload. They take no new messages,
        but WhatsApp's status webhooks for what they already sent still apply.
        """
        self._auth = Authenticator(accounts, api_keys)
        self.numbers = dict(numbers)
        hooks = {**(webhooks_only or {}), **self.numbers}
        self._by_digits = {n.lstrip("+"): info for n, info in hooks.items()}

    # -- auth ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None, account_sid: str) -> None:
        """Credentials (auth token or API key) of the account in the path: 401/403 otherwise."""
        self._auth.authenticate(authorization, account_sid)

    def account_for(self, authorization: str | None) -> str:
        """The account valid credentials act for (routes without an account in the path)."""
        return self._auth.account_for(authorization)

    def auth_token(self, account_sid: str) -> str | None:
        return self._auth.auth_token(account_sid)

    # -- messages -----------------------------------------------------------------

    def validate(self, account_sid: str, req: SendRequest) -> MessageRecord:
        """Every create rule, Twilio's error code for the first broken one; nothing is written."""
        if not req.to:
            raise _missing_to()
        to = self._address(req.to, field="To", code=21211)
        service = None
        if req.messaging_service_sid:
            service = self.services.get(account_sid, req.messaging_service_sid)
        now = self.wall.now()
        if req.from_:
            from_ = self._address(req.from_, field="From", code=21212)
        elif service is not None:
            from_ = self.services.pick(service, to, now, self._running)
        else:
            raise _missing_from()
        info = self._sender(account_sid, from_, req.from_)
        if to == from_:
            raise _same_number(req.to)
        content = compose(
            account_sid,
            body=req.body,
            media_urls=req.media_urls,
            content_sid=req.content_sid,
            content_variables=req.content_variables,
            validity_period=req.validity_period,
            templates=self.templates,
            max_body=self.max_body,
        )
        send_at = self._send_at(req, service is not None, now)
        if send_at is None and self._outside_window(info, to, content, now):
            raise _outside_window()
        if req.status_callback:
            _check_callback(req.status_callback)
        record = MessageRecord(
            sid=new_sid("MM" if content.media_urls else "SM"),
            account_sid=account_sid,
            from_number=from_,
            to_number=to,
            status="queued" if send_at is None else "scheduled",
            date_created=now,
            date_updated=now,
            status_callback=req.status_callback
            or (service.status_callback if service is not None else None)
            or info.status_callback,
            send_at=send_at,
            messaging_service_sid=service.sid if service is not None else None,
        )
        return apply_content(record, content, start=now if send_at is None else send_at)

    def validate_plain(
        self, account_sid: str, requests: Sequence[PlainSend]
    ) -> list[MessageRecord | TwilioError]:
        """``validate`` for requests with only To, From, Body and StatusCallback (the batch route):
        the same rules in the same order, per request its record or its error.

        What a batch shares is worked out once per batch rather than per message:
        each From's number (account, draining), each StatusCallback's syntax, the sids.
        """
        senders: dict[str, tuple[str, NumberInfo]] = {}
        callbacks: set[str] = set()
        sids = iter(new_sids("SM", len(requests)))
        out: list[MessageRecord | TwilioError] = []
        for req in requests:
            try:
                out.append(self._plain(account_sid, req, senders, callbacks, sids))
            except TwilioError as exc:
                out.append(exc)
        return out

    def _plain(
        self,
        account_sid: str,
        req: PlainSend,
        senders: dict[str, tuple[str, NumberInfo]],
        callbacks: set[str],
        sids: Iterator[str],
    ) -> MessageRecord:
        if not req.to:
            raise _missing_to()
        to = self._address(req.to, field="To", code=21211)
        now = self.wall.now()
        raw_from = req.from_
        if not raw_from:
            raise _missing_from()
        sender = senders.get(raw_from)
        if sender is None:
            from_ = self._address(raw_from, field="From", code=21212)
            sender = senders[raw_from] = (from_, self._sender(account_sid, from_, raw_from))
        from_, info = sender
        if to == from_:
            raise _same_number(req.to)
        body, template = text_content(account_sid, req.body, templates=self.templates, max_body=self.max_body)
        if self._text_outside_window(info, to, template, now):
            raise _outside_window()
        callback = req.status_callback
        if callback and callback not in callbacks:
            _check_callback(callback)
            callbacks.add(callback)
        record = MessageRecord(
            sid=next(sids),
            account_sid=account_sid,
            from_number=from_,
            to_number=to,
            body=body,
            status="queued",
            date_created=now,
            date_updated=now,
            status_callback=callback or info.status_callback,
            template=template,
        )
        # As compose.apply does for content without media or validity period.
        if len(body) > segments.TEXT_LIMIT:
            record.parts = len(parts.plan(record))
            record.num_segments = parts.num_segments(record)
        return record

    def _address(self, value: str, *, field: str, code: int) -> str:
        """``parse_address``, remembered for valid values."""
        parsed = self._addresses.get(value)
        if parsed is None:
            parsed = parse_address(value, field=field, code=code)
            if len(self._addresses) >= _ADDRESS_CACHE:
                self._addresses.clear()
            self._addresses[value] = parsed
        return parsed

    def _sender(self, account_sid: str, from_: str, raw_from: str | None) -> NumberInfo:
        """The account's number ``from_`` if it takes new messages (63007, or 503 while drained)."""
        info = self.numbers.get(from_)
        if info is None or info.account_sid != account_sid:
            raise TwilioError(
                400, 63007, f"Twilio could not find a Channel with the specified From address: {raw_from}"
            )
        if from_ in self.draining:
            raise TwilioError(
                503, 20503, f"Service unavailable: {from_} is being drained and accepts no new messages."
            )
        return info

    @staticmethod
    def _send_at(req: SendRequest, has_service: bool, now: float) -> float | None:
        """``SendAt`` + ``ScheduleType=fixed`` -> the due time; None for an immediate send."""
        if not req.send_at and not req.schedule_type:
            return None
        if req.schedule_type != "fixed":
            raise TwilioError(400, 35114, "ScheduleType must be 'fixed' to schedule a message with SendAt.")
        if not req.send_at:
            raise TwilioError(400, 35114, "SendAt is required with ScheduleType=fixed.")
        if not has_service:
            raise TwilioError(400, 35114, "Scheduling a message requires a MessagingServiceSid.")
        return scheduler.parse_send_at(req.send_at, now)

    def _outside_window(self, info: NumberInfo, to: str, content: Content, now: float) -> bool:
        return self._text_outside_window(info, to, content.template, now)

    def _text_outside_window(
        self, info: NumberInfo, to: str, template: TemplateSend | None, now: float
    ) -> bool:
        return (
            info.enforce_window and template is None and not window.is_open(self.store, info.number, to, now)
        )

    def _window_blocks(self, record: MessageRecord, now: float) -> bool:
        """At a scheduled message's time: a free-form message whose window has closed cannot go."""
        info = self.numbers.get(record.from_number)
        return info is not None and self._text_outside_window(info, record.to_number, record.template, now)

    def _running(self, number: str) -> bool:
        return self.supervisor.states().get(number) == "running"

    def _notify_part(self, seq: int, record: MessageRecord, part: int) -> None:
        actor = self.supervisor.actor(record.from_number)
        if actor is not None:
            actor.notify(seq, record, part)

    def intake(self, record: MessageRecord) -> Callable[[WriteTxn], int]:
        """The one write that accepts a validated ``record``: stored, then queued (every part) or
        scheduled, its sticky sender kept. Returns the first outbox seq (0 if scheduled)."""
        store_it = scheduler.schedule(record) if record.status == "scheduled" else ledger.accept(record)
        service_sid = record.messaging_service_sid

        def fn(txn: WriteTxn) -> int:
            seq = store_it(txn)
            if service_sid is not None:
                Services.remember(txn, service_sid, record.to_number, record.from_number)
            return seq

        return fn

    def intake_many(self, records: list[MessageRecord]) -> Callable[[WriteTxn], list[int]]:
        """``intake`` of many records in one write; each record's first seq (0 if scheduled)."""
        if all(r.status != "scheduled" and r.messaging_service_sid is None for r in records):
            return ledger.accept_many(records)
        each = [self.intake(record) for record in records]

        def fn(txn: WriteTxn) -> list[int]:
            return [intake(txn) for intake in each]

        return fn

    def handoff_many(self, seqs: Sequence[int], records: Sequence[MessageRecord]) -> None:
        """``handoff`` after ``intake_many`` committed, each number's actor looked up once;
        one debug line for the lot instead of one per message."""
        actors: dict[str, NumberActor | None] = {}
        scheduled = 0
        for seq, record in zip(seqs, records, strict=True):
            if record.status == "scheduled":
                scheduled += 1
                continue
            number = record.from_number
            if number in actors:
                actor = actors[number]
            else:
                actor = actors[number] = self.supervisor.actor(number)
            if actor is not None:
                for part in range(record.parts):
                    actor.notify(seq + part, record, part)
        if scheduled:
            self.scheduler.wake()
        log.debug("messages.accepted", messages=len(records) - scheduled, scheduled=scheduled)

    def handoff(self, seq: int, record: MessageRecord) -> None:
        """After ``intake`` committed: wake the number's actor for every part, or the scheduler."""
        if record.status == "scheduled":
            self.scheduler.wake()
            log.debug("message.scheduled", sid=record.sid, number=record.from_number, send_at=record.send_at)
            return
        for part in range(record.parts):
            self._notify_part(seq + part, record, part)
        log.debug("message.accepted", sid=record.sid, number=record.from_number, seq=seq)

    async def create(
        self, account_sid: str, req: SendRequest, *, idempotency_key: str | None = None
    ) -> MessageRecord:
        """Validate, commit durably (record + outbox entries, one fsync shared), wake the actor.

        With an idempotency key, a create already seen returns the original message.
        """
        record = self.validate(account_sid, req)
        if record.media_urls and self.media_guard is not None:
            await self.media_guard.check(record.media_urls)
        intake = self.intake(record)
        write: Callable[[WriteTxn], int | idempotency.Replay] = (
            intake
            if idempotency_key is None
            else idempotency.accept_once(
                account_sid,
                idempotency_key,
                idempotency.fingerprint(req),
                record,
                record.date_created,
                accept=intake,
            )
        )
        try:
            seq = await self.store.write(write)
        except idempotency.KeyConflict:
            raise TwilioError(
                422, 20001, "This idempotency key was already used with different parameters."
            ) from None
        except StoreError as exc:
            log.error("message.store_failed", sid=record.sid, error=str(exc))
            raise TwilioError(503, 20503, "Service unavailable: the message could not be stored.") from exc
        if isinstance(seq, idempotency.Replay):
            log.info("message.idempotent_replay", sid=seq.record.sid, number=record.from_number)
            return seq.record
        self.handoff(seq, record)
        return record

    def fetch(self, account_sid: str, sid: str) -> MessageRecord:
        raw = self.store.get(b"messages", ledger.sid_key(sid))
        if raw is not None:
            record = ledger.load(raw)
            if record.account_sid == account_sid:
                return record
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"
        raise TwilioError(404, 20404, f"The requested resource {uri} was not found")

    # -- webhooks from WhatsApp ------------------------------------------------------

    def numbers_by_digits(self, digits: str) -> NumberInfo | None:
        return self._by_digits.get(digits)

    def webhook_number(self, digits: str, secret: str, *, via: str = "path") -> NumberInfo | None:
        """The number a webhook names, if it uses that way of proving its source and the secret matches."""
        info = self._by_digits.get(digits)
        if info is None or info.webhook_auth != via:
            return None
        # An empty secret never matches (secretpolicy.matches, inlined: this runs for every webhook).
        if (
            not secret
            or not info.webhook_secret
            or not hmac.compare_digest(secret.encode(), info.webhook_secret.encode())
        ):
            return None
        return info

    def cloud_number(self, digits: str) -> NumberInfo | None:
        """The Cloud API number a ``/webhooks/cloud/{digits}`` route names (its secrets are checked there)."""
        info = self._by_digits.get(digits)
        return info if info is not None and info.cloud is not None else None

    async def on_webhook(self, info: NumberInfo, events: WebhookEvents) -> Applied:
        """Apply a channel's decoded webhook (any channel): statuses, inbound messages, callbacks."""
        return await self.inbox.apply(info, events)

    def _notify(self, number: str, seq: int, record: MessageRecord, part: int = 0) -> None:
        actor = self.supervisor.actor(number)
        if actor is not None:
            actor.notify(seq, record, part)

    def _note_status(self, number: str, record: MessageRecord) -> None:
        actor = self.supervisor.actor(number)
        if actor is not None:
            actor.note_status(record.status, record.error_code)
