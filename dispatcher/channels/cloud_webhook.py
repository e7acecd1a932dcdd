"""Cloud API webhooks (``object / entry[] / changes[] / value``) -> channel-neutral events.

The message objects inside ``value.messages`` have the On-Prem shape, so they
are decoded and flattened by ``onprem_webhook``; this module adds the Cloud
envelope, Cloud's error codes, its extra statuses and the BSUID contacts.

Like the On-Prem decoder it is strict about what we use (a bad id, timestamp
or status rejects the whole delivery before anything is applied) and lenient
about the rest: unknown fields, other webhook fields (template status, account
updates), message types Twilio has no form for (reactions, ``unsupported``),
and customers known only by a business-scoped user id (no phone number to
address them by) are counted as ignored.

Each event carries a dedup key (``keys``): Meta redelivers a webhook until it
gets a 200 and may send the same status twice, so the route skips events it
already applied (``dispatcher.dedup``).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import attrs
import msgspec
import structlog

from dispatcher import jsondecode
from dispatcher.channels import onprem_webhook
from dispatcher.channels.cloud import twilio_code
from dispatcher.channels.onprem_webhook import WebhookError
from dispatcher.events import ChannelError, InboundEvent, StatusEvent, WebhookEvents

log = structlog.get_logger()

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,12}$")]
Text = Annotated[str, msgspec.Meta(max_length=65_536)]
_PHONE = re.compile(r"^\+?[1-9][0-9]{6,14}$")
_NON_DIGITS = re.compile(r"[^0-9]")
GENERIC_FAILURE: Final = 30008

# Cloud status -> Twilio status; ``played`` (voice) and ``deleted`` change nothing.
STATUSES: Final = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
IGNORED_STATUSES: Final = frozenset({"played", "deleted", "warning"})
# Message types Twilio's webhook has no form for.
IGNORED_TYPES: Final = frozenset({"reaction", "unsupported", "order", "request_welcome", "ephemeral"})


class _ErrorData(msgspec.Struct):
    details: Text = ""


class _Error(msgspec.Struct, kw_only=True):
    code: int
    title: Text = ""
    message: Text = ""
    error_data: _ErrorData | None = None

    def text(self) -> str:
        details = self.error_data.details if self.error_data is not None else ""
        return self.title or self.message or details or f"WhatsApp error {self.code}"


class _Status(msgspec.Struct, kw_only=True):
    id: Id
    status: Annotated[str, msgspec.Meta(max_length=32)]
    timestamp: Timestamp = "0"
    recipient_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    errors: list[_Error] = []


class _Profile(msgspec.Struct, frozen=True):
    name: Text = ""


class _Contact(msgspec.Struct, kw_only=True):
    wa_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    user_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    profile: _Profile = _Profile()


class _Metadata(msgspec.Struct, kw_only=True):
    phone_number_id: Id
    display_phone_number: str = ""


class _Peek(msgspec.Struct, kw_only=True):
    """Enough of a message to decide whether we can turn it into an event."""

    type: Annotated[str, msgspec.Meta(max_length=32)]
    sender: str | None = msgspec.field(name="from", default=None)


class _Value(msgspec.Struct, kw_only=True):
    metadata: _Metadata
    messaging_product: str = "whatsapp"
    contacts: list[_Contact] = []
    messages: list[msgspec.Raw] = []
    statuses: list[_Status] = []
    errors: list[_Error] = []


class _Change(msgspec.Struct, kw_only=True):
    field: Annotated[str, msgspec.Meta(max_length=64)]
    value: msgspec.Raw


class _Entry(msgspec.Struct, kw_only=True):
    id: Id
    changes: list[_Change] = []


class _Envelope(msgspec.Struct, kw_only=True):
    object: str
    entry: list[_Entry]


_envelope: Final = msgspec.json.Decoder(_Envelope)
_value: Final = msgspec.json.Decoder(_Value)
_peek: Final = msgspec.json.Decoder(_Peek)
_message: Final = msgspec.json.Decoder(onprem_webhook._Message)


@attrs.frozen
class Decoded:
    """The events of one delivery, each with its dedup key (same order as in ``events``)."""

    events: WebhookEvents
    status_keys: list[str]
    inbound_keys: list[str]
    foreign: int  # changes for another phone number id (a misrouted webhook)


def decode(body: bytes, phone_number_id: str) -> Decoded:
    """Decode a Cloud webhook for ``phone_number_id``.

    Raises:
        WebhookError: anything malformed; nothing of the body should be applied.
    """
    try:
        envelope = jsondecode.decode(_envelope, body)
    except msgspec.ValidationError as exc:
        raise WebhookError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise WebhookError(f"not JSON: {exc}") from exc
    if envelope.object != "whatsapp_business_account":
        raise WebhookError(f"object: expected 'whatsapp_business_account', got {envelope.object[:64]!r}")
    statuses: list[StatusEvent] = []
    status_keys: list[str] = []
    inbound: list[InboundEvent] = []
    inbound_keys: list[str] = []
    errors: list[ChannelError] = []
    ignored = foreign = 0
    for e, entry in enumerate(envelope.entry):
        for c, change in enumerate(entry.changes):
            where = f"entry[{e}].changes[{c}].value"
            if change.field != "messages":
                ignored += 1
                continue
            try:
                value = jsondecode.decode(_value, change.value)
            except msgspec.DecodeError as exc:
                raise WebhookError(f"{where}: {exc}") from exc
            if value.metadata.phone_number_id != phone_number_id:
                foreign += 1
                continue
            for i, status in enumerate(value.statuses):
                for update in _status(status, where, i):
                    statuses.append(update)
                    status_keys.append(f"s:{update.channel_id}:{update.status}")
                ignored += status.status in IGNORED_STATUSES
            profiles = {c.wa_id: c.profile.name for c in value.contacts if c.wa_id}
            for i, raw in enumerate(value.messages):
                event = _inbound(raw, profiles, f"{where}.messages[{i}]")
                if event is None:
                    ignored += 1
                else:
                    inbound.append(event)
                    inbound_keys.append(f"m:{event.channel_id}")
            errors.extend(ChannelError(err.code, err.text()) for err in value.errors)
    events = WebhookEvents(statuses=statuses, inbound=inbound, errors=errors, ignored=ignored)
    return Decoded(events, status_keys, inbound_keys, foreign)


def digits_of(text: str) -> str:
    """``text`` without its non-digits (a wa_id is usually digits already: no regex then)."""
    return text if text.isdigit() and text.isascii() else _NON_DIGITS.sub("", text)


def _status(status: _Status, where: str, index: int) -> list[StatusEvent]:
    """One status, read by its position ``where``.statuses[``index``] (named only in errors)."""
    if status.status in IGNORED_STATUSES:
        return []
    twilio = STATUSES.get(status.status)
    if twilio is None:
        raise WebhookError(f"{where}.statuses[{index}].status: unknown status {status.status[:32]!r}")
    code = message = None
    if status.errors:
        first = status.errors[0]
        code, message = twilio_code(first.code), first.text()
    elif twilio == "failed":
        code, message = GENERIC_FAILURE, "WhatsApp reported the message failed"
    recipient = digits_of(status.recipient_id)
    event = StatusEvent(
        channel_id=status.id, status=twilio, error_code=code, error_message=message, recipient=recipient
    )
    if twilio == "read":
        # Meta may skip "delivered" when the message is read at once: read implies delivered.
        return [StatusEvent(channel_id=status.id, status="delivered", recipient=recipient), event]
    return [event]


def _inbound(raw: msgspec.Raw, profiles: dict[str, str], where: str) -> InboundEvent | None:
    try:
        peek = jsondecode.decode(_peek, raw)
    except msgspec.DecodeError as exc:
        raise WebhookError(f"{where}: {exc}") from exc
    if peek.type in IGNORED_TYPES:
        return None
    if peek.sender is None or not _PHONE.match(peek.sender):
        # Known only by a business-scoped user id: Twilio addresses customers by phone number.
        log.info("webhook.inbound_without_phone", type=peek.type)
        return None
    try:
        message = jsondecode.decode(_message, raw)
    except msgspec.DecodeError as exc:
        raise WebhookError(f"{where}: {exc}") from exc
    sender = digits_of(message.sender)
    try:
        return onprem_webhook._inbound(message, profiles.get(sender, ""), 0)
    except WebhookError as exc:
        raise WebhookError(f"{where}: {exc}") from exc
