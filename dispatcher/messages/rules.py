"""The create rules: what makes a Messages create valid, and Twilio's error code when it is not.

Every intake path (Twilio form, JSON, batch, scheduled) is judged here, so they
share one set of rules; nothing is written. ``validate`` judges one create in
full; ``validate_plain`` judges the plain items of a batch (To, From, Body,
StatusCallback) by the same rules in the same order, working out once per
batch what its items share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Protocol, final

import attrs

from dispatcher.config import ServiceConfig
from dispatcher.core import fallbacks, parts, segments, window
from dispatcher.core.bucketing import slot_of
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.models import FallbackPlan, MessageRecord, SidBatch, TemplateSend, new_sid
from dispatcher.core.ssrf import RefusedURLError, check_host, check_syntax
from dispatcher.core.twilio import CHANNEL_PREFIX, TwilioError
from dispatcher.messages import fallback_plan, scheduler
from dispatcher.messages.compose import Content, compose, text_content
from dispatcher.messages.compose import apply as apply_content
from dispatcher.messages.fallback_plan import NO_REQUEST, FallbackRequest
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry

MAX_BODY_CHARS: Final = 1600  # Twilio's limit for a (concatenated) message body, in characters
_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PREFIX: Final = re.compile(r"^[a-z][a-z0-9-]{0,19}:")
_CHANNEL_ID: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Parsed addresses kept (cleared when full): senders and repeat recipients parse once.
_ADDRESS_CACHE: Final = 4096


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
    # Our extension (``fallback_plan``): FallbackFrom, FallbackErrorCodes, FallbackAfter, ...
    fallback: FallbackRequest = NO_REQUEST
    # Set only by the fallback task: this create is the fallback of that message.
    primary_sid: str | None = None

    def identity(self) -> dict[str, object]:
        """What a repeat under the same idempotency key must match: every parameter, by name in
        sorted order as msgspec encodes this class, the fallback ones only when given, so a key
        stored before they existed still matches its retry."""
        fields = attrs.asdict(self, recurse=False)
        if self.fallback is NO_REQUEST:
            del fields["fallback"]
        if self.primary_sid is None:
            del fields["primary_sid"]
        return dict(sorted(fields.items()))


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


def parse_address(value: str, *, field: str, code: int) -> tuple[str, str]:
    """An address and its channel prefix: ``whatsapp:+15551234567`` -> ``("whatsapp:", "+15551234567")``,
    bare E.164 (SMS) -> ``("", "+15551234567")``, ``line:U4af4...`` -> ``("line:", "U4af4...")``.

    A phone number must be E.164; another channel's id (a LINE user id) must at least look like
    an id here, and is checked against its channel's pattern once the sender is known.
    """
    raw = value.strip()
    prefix = ""
    match = _PREFIX.match(raw)
    if match is not None:
        prefix, raw = match[0], raw[match.end() :]
    if _E164.match(raw) or (prefix not in ("", CHANNEL_PREFIX) and _CHANNEL_ID.match(raw)):
        return prefix, raw
    raise TwilioError(400, code, f"The '{field}' number {value} is not a valid phone number.")


def _check_channel(info: NumberInfo, to: tuple[str, str], from_prefix: str, raw_to: str) -> None:
    """To and From are addresses of the sender's channel (21910), a channel id of its form (21211).

    A WhatsApp or SMS address may come without its prefix, as Twilio takes them."""
    expected = info.prefix
    for prefix in (to[0], from_prefix):
        if prefix and prefix != expected:
            raise TwilioError(
                400, 21910, "Invalid From and To pair. From and To should be of the same channel."
            )
    pattern = info.spec.recipient if info.spec is not None else None
    if pattern is not None:
        if not to[0]:
            raise TwilioError(
                400, 21910, "Invalid From and To pair. From and To should be of the same channel."
            )
        if pattern.fullmatch(to[1]) is None:
            raise TwilioError(
                400, 21211, f"The 'To' address {raw_to} is not a valid {expected.rstrip(':')} id."
            )
    elif to[0] not in ("", CHANNEL_PREFIX) and not _E164.match(to[1]):  # (E.164 checked by parse otherwise)
        raise TwilioError(400, 21211, f"The 'To' number {raw_to} is not a valid phone number.")


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


def _refuse_for_window(record: MessageRecord) -> None:
    """A free-form message outside the window whose plan stands in for it (a window template, or
    63016 among its codes): it is kept as ``failed`` (63016), never queued, and its fallback goes
    in its stead."""
    record.status = "failed"
    record.error_code = 63016
    record.error_message = _outside_window().message


@final
class CreateRules:
    """The create rules over the running configuration: the directory, services, templates, drains.

    ``draining`` is the set of numbers an operator is draining (``ops``): they take no new
    messages. ``buckets``: the data root's buckets (the 24 h window of a sender, its sids' slot).
    """

    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        directory: Directory,
        templates: TemplateRegistry,
        services: Services,
        draining: set[str],
        max_body_chars: int = MAX_BODY_CHARS,
    ) -> None:
        self._buckets = buckets
        self._wall = wall
        self._directory = directory
        self._templates = templates
        self._services = services
        self._draining = draining
        self._max_body_chars = max_body_chars
        self._addresses: dict[str, tuple[str, str]] = {}

    def reload(self, services: Services, max_body_chars: int) -> None:
        """A live reload's ``[[services]]`` and ``[messaging] max_body`` (the directory and the
        templates are reloaded by their owners)."""
        self._services = services
        self._max_body_chars = max_body_chars

    def sender_of(
        self, account_sid: str, to: str | None, from_: str | None, service_sid: str | None
    ) -> str | None:
        """The number a create with these fields is sent from (so stored by), as ``validate``
        decides it; None if the create is refused before a sender is known (any daemon says why).

        A front door asks it to find the bucket a create belongs to before forwarding it.
        """
        try:
            if from_:
                return self._address(from_, field="From", code=21212)[1]
            if service_sid and to:
                service = self._services.get(account_sid, service_sid)
                return self._services.pick(
                    service, self._address(to, field="To", code=21211)[1], self._wall.now()
                )
        except TwilioError:
            return None
        return None

    def validate(self, account_sid: str, req: SendRequest) -> MessageRecord:
        """Every create rule, Twilio's error code for the first broken one; nothing is written."""
        if not req.to:
            raise _missing_to()
        to_address = self._address(req.to, field="To", code=21211)
        to = to_address[1]
        service = None
        if req.messaging_service_sid:
            service = self._services.get(account_sid, req.messaging_service_sid)
        now = self._wall.now()
        if req.from_:
            from_prefix, from_ = self._address(req.from_, field="From", code=21212)
        elif service is not None:
            from_prefix, from_ = "", self._services.pick(service, to, now)
        else:
            raise _missing_from()
        info = self._sender(account_sid, from_, req.from_)
        _check_channel(info, to_address, from_prefix, req.to)
        if to == from_:
            raise _same_number(req.to)
        content = compose(
            account_sid,
            body=req.body,
            media_urls=req.media_urls,
            content_sid=req.content_sid,
            content_variables=req.content_variables,
            validity_period=req.validity_period,
            templates=self._templates,
            max_body=self._max_body_chars,
            waba=info.waba,
            match=info.prefix == CHANNEL_PREFIX,
        )
        send_at = self._send_at(req, service is not None, now)
        plan = self._plan(account_sid, req, service, info, from_, now if send_at is None else send_at)
        refused = send_at is None and self._outside_window(info, to, content, now)
        if refused and (plan is None or not fallbacks.stands_in_for_window(plan)):
            raise _outside_window()
        if req.status_callback:
            _check_callback(req.status_callback)
        record = MessageRecord(
            sid=new_sid("MM" if content.media_urls else "SM", slot_of(from_)),
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
            fallback=plan,
            primary_sid=req.primary_sid,
            address_prefix=info.prefix,
        )
        if refused:
            _refuse_for_window(record)
        return apply_content(record, content, start=now if send_at is None else send_at)

    def _plan(
        self,
        account_sid: str,
        req: SendRequest,
        service: ServiceConfig | None,
        info: NumberInfo,
        from_: str,
        start: float,
    ) -> FallbackPlan | None:
        """The create's fallback plan (none for a fallback message itself)."""
        if req.primary_sid is not None:
            return None
        if (
            req.fallback is NO_REQUEST
            and info.window_template is None
            and (service is None or service.fallback is None)
        ):
            return None  # the common create: nothing to work out
        fallback_sender = None
        if req.fallback.from_:
            fallback_sender = self._address(req.fallback.from_, field="FallbackFrom", code=21212)[1]
            self._number(account_sid, fallback_sender, req.fallback.from_)  # drained now is fine later
        return fallback_plan.plan(
            req.fallback,
            service=service,
            sender=info,
            from_number=from_,
            start=start,
            fallback_sender=fallback_sender,
            max_body=self._max_body_chars,
        )

    def validate_plain(
        self, account_sid: str, requests: Sequence[PlainSend]
    ) -> list[MessageRecord | TwilioError]:
        """``validate`` for requests with only To, From, Body and StatusCallback (the batch route):
        the same rules in the same order, per request its record or its error.

        What a batch shares is worked out once per batch rather than per message:
        each From's number (account, draining), each StatusCallback's syntax, the sids.
        """
        senders: dict[str, tuple[str, str, NumberInfo]] = {}
        callbacks: set[str] = set()
        sids = SidBatch("SM", len(requests))
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
        senders: dict[str, tuple[str, str, NumberInfo]],
        callbacks: set[str],
        sids: SidBatch,
    ) -> MessageRecord:
        if not req.to:
            raise _missing_to()
        to_address = self._address(req.to, field="To", code=21211)
        to = to_address[1]
        now = self._wall.now()
        raw_from = req.from_
        if not raw_from:
            raise _missing_from()
        sender = senders.get(raw_from)
        if sender is None:
            from_prefix, from_ = self._address(raw_from, field="From", code=21212)
            sender = senders[raw_from] = (from_prefix, from_, self._sender(account_sid, from_, raw_from))
        from_prefix, from_, info = sender
        if to_address[0] or from_prefix or info.spec is not None:
            _check_channel(info, to_address, from_prefix, req.to)
        if to == from_:
            raise _same_number(req.to)
        body, template = text_content(
            account_sid,
            req.body,
            templates=self._templates if info.prefix == CHANNEL_PREFIX else None,  # WhatsApp's matching
            max_body=self._max_body_chars,
        )
        plan = None
        if self._text_outside_window(info, to, template, now):
            plan = fallback_plan.window_only(info)
            if plan is None:
                raise _outside_window()
        callback = req.status_callback
        if callback and callback not in callbacks:
            _check_callback(callback)
            callbacks.add(callback)
        record = MessageRecord(
            sid=sids.mint(slot_of(from_)),
            account_sid=account_sid,
            from_number=from_,
            to_number=to,
            body=body,
            status="queued",
            date_created=now,
            date_updated=now,
            status_callback=callback or info.status_callback,
            template=template,
            address_prefix=info.prefix,
        )
        if plan is not None:
            record.fallback = plan
            _refuse_for_window(record)
        # As compose.apply does for content without media or validity period.
        if len(body) > segments.TEXT_LIMIT:
            record.parts = len(parts.plan(record))
            record.num_segments = parts.num_segments(record)
        return record

    def _address(self, value: str, *, field: str, code: int) -> tuple[str, str]:
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
        info = self._number(account_sid, from_, raw_from)
        if from_ in self._draining:
            raise TwilioError(
                503, 20503, f"Service unavailable: {from_} is being drained and accepts no new messages."
            )
        return info

    def _number(self, account_sid: str, number: str, raw: str | None) -> NumberInfo:
        """The account's configured number ``number`` (63007 if it has none such)."""
        info = self._directory.get(number)
        if info is None or info.account_sid != account_sid:
            raise TwilioError(
                400, 63007, f"Twilio could not find a Channel with the specified From address: {raw}"
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
            info.enforce_window
            and template is None
            and not window.is_open(self._buckets.for_number(info.number), info.number, to, now)
        )

    def window_blocks(self, record: MessageRecord, now: float) -> bool:
        """At a scheduled message's time: a free-form message whose window has closed cannot go."""
        info = self._directory.get(record.from_number)
        return info is not None and self._text_outside_window(info, record.to_number, record.template, now)
