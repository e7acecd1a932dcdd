"""Cloud API webhooks (``object / entry[] / changes[] / value``) -> channel-neutral events.

The message objects inside ``value.messages`` have the On-Prem shape and are
read by ``inbound_message`` (shared with On-Prem); this module adds the Cloud
envelope, Cloud's error codes, its extra statuses and the BSUID contacts.

The route has authenticated the delivery (``X-Hub-Signature-256``), so it is
applied whatever it carries. Only a body that is not a Cloud envelope at all
(not JSON, no ``object``/``entry``) raises ``WebhookError`` (a 400). Inside,
each change, status and message stands alone: one that cannot be applied as it
came (an unknown status, a field in an unexpected form, a change for another
phone number id) becomes an ``Unapplied`` note (logged and counted by the
inbox), and the rest is applied. Changes of other fields (template updates,
account updates) are handed over as they came (``FieldChange``, the value
undecoded): the route passes them to whoever registered for their field
(``dispatcher.webhooks.cloud_fields``).

Speed: a change's ``value`` decodes in one typed pass (``_Value``: statuses
typed, messages raw); only when that fails is each item decoded alone.

A change names its number (``value.metadata.phone_number_id``): ``decode`` reads one number's
changes (its own webhook URL; another number's change is noted ``other_number``),
``decode_by_number`` groups every change by the number it names (the app's one callback URL,
``dispatcher.frontdoor.cloud_app``).

Each event carries a dedup key (``keys``): Meta redelivers a webhook until it
gets a 200 and may send the same status twice, so the route skips events it
already applied (``dispatcher.webhooks.dedup``).
"""

from __future__ import annotations

from typing import Annotated, Final

import attrs
import msgspec

from actors.outcome import GENERIC_FAILURE
from dispatcher.channels.cloud import twilio_code
from dispatcher.channels.inbound_message import digits_of
from dispatcher.channels.webhook_items import (
    STATUSES,
    Batch,
    Contact,
    Id,
    ItemReader,
    Status,
    Text,
    WebhookError,
)
from dispatcher.core import jsondecode
from dispatcher.core.events import ChannelError, StatusEvent, Unapplied, WebhookEvents

__all__ = ["ByNumber", "Decoded", "FieldChange", "WebhookError", "decode", "decode_by_number", "digits_of"]

# ``played`` (voice), ``deleted`` and ``warning`` change nothing.
IGNORED_STATUSES: Final = frozenset({"played", "deleted", "warning"})


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


_Status = Status[_Error]


class _Metadata(msgspec.Struct, kw_only=True):
    phone_number_id: Id
    display_phone_number: str = ""


class _Value(msgspec.Struct, kw_only=True):
    """The fast, typed pass over a change's value."""

    metadata: _Metadata
    messaging_product: str = "whatsapp"
    contacts: list[Contact] = []
    messages: list[msgspec.Raw] = []
    statuses: list[_Status] = []
    errors: list[_Error] = []


class _Items(msgspec.Struct, kw_only=True):
    """The fallback pass: every item kept raw, decoded alone."""

    metadata: _Metadata
    contacts: list[msgspec.Raw] = []
    messages: list[msgspec.Raw] = []
    statuses: list[msgspec.Raw] = []
    errors: list[msgspec.Raw] = []


class _Change(msgspec.Struct, kw_only=True):
    field: Annotated[str, msgspec.Meta(max_length=64)] = ""
    value: msgspec.Raw = msgspec.Raw(b"null")


class _Entry(msgspec.Struct, kw_only=True):
    id: str | int = ""  # the WABA's id (a string in Meta's examples)
    time: int | float = 0
    changes: list[msgspec.Raw] = []


class _Envelope(msgspec.Struct, kw_only=True):
    object: str
    entry: list[msgspec.Raw]


_envelope: Final = msgspec.json.Decoder(_Envelope)
_entry: Final = msgspec.json.Decoder(_Entry)
_change: Final = msgspec.json.Decoder(_Change)
_value: Final = msgspec.json.Decoder(_Value)
_items: Final = msgspec.json.Decoder(_Items)


@attrs.frozen
class FieldChange:
    """A change of a field other than ``messages`` (``message_template_status_update``,
    ``account_update``...): its WABA (the entry's id), when Meta sent it, its value unread."""

    field: str
    waba_id: str
    time: float  # the entry's ``time`` (Unix seconds), 0 if Meta gave none
    value: msgspec.Raw
    where: str  # e.g. ``entry[0].changes[1]``, for logs


@attrs.frozen
class Decoded:
    """The events of one delivery, each with its dedup key (same order as in ``events``),
    and its changes of other fields."""

    events: WebhookEvents
    status_keys: list[str]
    inbound_keys: list[str]
    fields: list[FieldChange] = attrs.field(factory=list)


@attrs.frozen
class ByNumber:
    """An app-level delivery split by the phone number ids its changes name (each number's
    events, as ``decode`` gives them for that number), its changes of other fields (by WABA:
    they name no number), and what no number can be told from (an unreadable entry, change,
    or a value without a readable ``metadata.phone_number_id``)."""

    numbers: dict[str, Decoded]
    fields: list[FieldChange]
    unapplied: list[Unapplied]
    where: dict[str, str]  # by phone number id: where its first change is (for logs)


def decode(body: bytes, phone_number_id: str) -> Decoded:
    """Decode an authenticated Cloud webhook for ``phone_number_id`` (its per-number URL): a
    change naming another phone number id is noted ``other_number``, not applied.

    Raises:
        WebhookError: the body is not a Cloud webhook envelope; nothing of it should be applied.
    """
    split = _Split(phone_number_id)
    fields = _walk(_envelope_of(body), split)
    return _decoded(split.loose, fields)


def decode_by_number(body: bytes) -> ByNumber:
    """Decode a Cloud webhook of the app-level URL: every change, grouped by the number it names.

    Raises:
        WebhookError: the body is not a Cloud webhook envelope; nothing of it should be applied.
    """
    split = _Split(None)
    fields = _walk(_envelope_of(body), split)
    numbers = {pnid: _decoded(batch, []) for pnid, batch in split.numbers.items()}
    return ByNumber(numbers, fields, split.loose.unapplied, split.where)


def _envelope_of(body: bytes) -> _Envelope:
    try:
        envelope = jsondecode.decode(_envelope, body)
    except msgspec.ValidationError as exc:
        raise WebhookError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise WebhookError(f"not JSON: {exc}") from exc
    if envelope.object != "whatsapp_business_account":
        raise WebhookError(f"object: expected 'whatsapp_business_account', got {envelope.object[:64]!r}")
    return envelope


class _Split:
    """Where a change's events go: the one number's batch (``only``: a per-number URL, other
    numbers' changes noted in it) or a batch per phone number id (the app-level URL); ``loose``
    takes the notes about what names no number."""

    def __init__(self, only: str | None) -> None:
        self.only = only
        self.loose = Batch()
        self.numbers: dict[str, Batch] = {}
        self.where: dict[str, str] = {}

    def batch(self, metadata: _Metadata, where: str) -> Batch | None:
        pnid = metadata.phone_number_id
        if self.only is not None:
            if pnid == self.only:
                return self.loose
            self.loose.note(_other_number(metadata, where))
            return None
        batch = self.numbers.get(pnid)
        if batch is None:
            batch = self.numbers[pnid] = Batch()
            self.where[pnid] = where
        return batch


def _walk(envelope: _Envelope, split: _Split) -> list[FieldChange]:
    """Every change of the envelope into ``split``; returns the changes of other fields."""
    fields: list[FieldChange] = []
    loose = split.loose
    for e, raw_entry in enumerate(envelope.entry):
        try:
            entry = jsondecode.decode(_entry, raw_entry)
        except msgspec.DecodeError as exc:
            loose.note(Unapplied("bad_entry", f"entry[{e}]", str(exc)[:300]))
            continue
        for c, raw_change in enumerate(entry.changes):
            where = f"entry[{e}].changes[{c}]"
            try:
                change = jsondecode.decode(_change, raw_change)
            except msgspec.DecodeError as exc:
                loose.note(Unapplied("bad_change", where, str(exc)[:300]))
                continue
            if change.field != "messages":
                loose.ignored += 1  # template, account, call updates: nothing for the inbox
                waba, sent_at = str(entry.id), float(entry.time)
                fields.append(FieldChange(change.field, waba, sent_at, change.value, where))
                continue
            _value_events(split, change.value, f"{where}.value")
    return fields


def _decoded(batch: Batch, fields: list[FieldChange]) -> Decoded:
    events = batch.events()
    status_keys = [f"s:{s.channel_id}:{s.status}" for s in events.statuses]
    inbound_keys = [f"m:{m.channel_id}" for m in events.inbound]
    return Decoded(events, status_keys, inbound_keys, fields)


def _value_events(split: _Split, raw: msgspec.Raw, where: str) -> None:
    try:
        value = jsondecode.decode(_value, raw)
    except msgspec.DecodeError:
        _items_events(split, raw, where)
        return
    batch = split.batch(value.metadata, where)
    if batch is not None:
        _reader.apply(batch, f"{where}.", value.statuses, value.contacts, value.messages, value.errors)


def _items_events(split: _Split, raw: msgspec.Raw, where: str) -> None:
    """The typed pass over a value failed somewhere: decode every item alone."""
    try:
        items = jsondecode.decode(_items, raw)
    except msgspec.DecodeError as exc:
        # Without a readable metadata.phone_number_id the change cannot be told to be ours.
        split.loose.note(Unapplied("bad_value", where, str(exc)[:300]))
        return
    batch = split.batch(items.metadata, where)
    if batch is not None:
        _reader.apply_each(batch, f"{where}.", items.statuses, items.contacts, items.messages, items.errors)


def _other_number(metadata: _Metadata, where: str) -> Unapplied:
    return Unapplied(
        "other_number", f"{where}.metadata", f"phone_number_id {metadata.phone_number_id[:40]!r}"
    )


def _add_status(batch: Batch, status: _Status, where: str) -> None:
    twilio = STATUSES.get(status.status)
    if twilio is None:
        batch.unmapped(status.status, IGNORED_STATUSES, where)
        return
    code = message = None
    if status.errors:
        first = status.errors[0]
        code, message = twilio_code(first.code), first.text()
    elif twilio == "failed":
        code, message = GENERIC_FAILURE, "WhatsApp reported the message failed"
    recipient = digits_of(status.recipient_id)
    if twilio == "read":
        # Meta may skip "delivered" when the message is read at once: read implies delivered.
        batch.statuses.append(StatusEvent(channel_id=status.id, status="delivered", recipient=recipient))
    batch.statuses.append(
        StatusEvent(
            channel_id=status.id, status=twilio, error_code=code, error_message=message, recipient=recipient
        )
    )


def _error_event(error: _Error) -> ChannelError:
    return ChannelError(error.code, error.text())


_reader: Final = ItemReader(
    status_decoder=msgspec.json.Decoder(_Status),
    error_decoder=msgspec.json.Decoder(_Error),
    add_status=_add_status,
    error_event=_error_event,
)
