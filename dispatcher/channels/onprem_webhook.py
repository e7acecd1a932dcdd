"""On-Premises API webhooks (flat ``statuses`` / ``contacts`` + ``messages`` / ``errors``) -> events.

The caller has authenticated the delivery, so it is applied whatever it
carries: only a body that is not a JSON object is refused (``WebhookError``,
a 400; the platform retries it). Inside, each status and message stands
alone: one that cannot be applied as it came (an unknown status, a field in
an unexpected form) is reported as ``Unapplied`` (logged and counted by the
inbox) and the others are applied. Customer messages are read by
``inbound_message`` (shared with Cloud), which stores even the kinds it
cannot flatten.

Speed: a delivery of hundreds of statuses decodes in one typed pass
(``_Webhook``); only when that pass fails does each item get decoded alone.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from actors.outcome import GENERIC_FAILURE
from dispatcher.channels.onprem import TWILIO_CODE
from dispatcher.channels.webhook_items import (
    STATUSES,
    Batch,
    Contact,
    ItemReader,
    Status,
    Text,
    WebhookError,
)
from dispatcher.core import jsondecode
from dispatcher.core.events import ChannelError, StatusEvent, Unapplied, WebhookEvents

__all__ = ["WebhookError", "decode"]

_DIGITS = re.compile(r"[^0-9]")


# -- the wire ---------------------------------------------------------------------


class _Error(msgspec.Struct, kw_only=True):
    code: int
    title: Text = ""
    details: Text = ""


_Status = Status[_Error]


class _Webhook(msgspec.Struct, kw_only=True):
    """The fast, typed pass over a whole delivery."""

    statuses: list[_Status] = []
    contacts: list[Contact] = []
    messages: list[msgspec.Raw] = []
    errors: list[_Error] = []


class _Items(msgspec.Struct, kw_only=True):
    """The fallback pass: every item kept raw, decoded alone."""

    statuses: list[msgspec.Raw] = []
    contacts: list[msgspec.Raw] = []
    messages: list[msgspec.Raw] = []
    errors: list[msgspec.Raw] = []


class _Lists(msgspec.Struct, kw_only=True):
    """The last resort: a top-level field that is not even a list is skipped, not fatal."""

    statuses: msgspec.Raw = msgspec.Raw(b"[]")
    contacts: msgspec.Raw = msgspec.Raw(b"[]")
    messages: msgspec.Raw = msgspec.Raw(b"[]")
    errors: msgspec.Raw = msgspec.Raw(b"[]")


_decoder: Final = msgspec.json.Decoder(_Webhook)
_items: Final = msgspec.json.Decoder(_Items)
_lists: Final = msgspec.json.Decoder(_Lists)
_raw_list: Final = msgspec.json.Decoder(list[msgspec.Raw])

# ``deleted`` (the customer deleted the message) has no Twilio equivalent: it is
# acknowledged and changes nothing.
IGNORED_STATUSES: Final = frozenset({"deleted", "warning"})
# A failed status for these codes means WhatsApp accepted the message and could not
# deliver it in time: Twilio calls that ``undelivered``.
UNDELIVERED_CODES: Final = frozenset({410})


def decode(body: bytes) -> WebhookEvents:
    """Decode an authenticated webhook body into channel-neutral events.

    Raises:
        WebhookError: the body is not a JSON object; nothing of it should be applied.
    """
    try:
        hook = jsondecode.decode(_decoder, body)
    except msgspec.ValidationError:
        return _decode_items(body)
    except msgspec.DecodeError as exc:
        raise WebhookError(f"not JSON: {exc}") from exc
    batch = Batch()
    _reader.apply(batch, "", hook.statuses, hook.contacts, hook.messages, hook.errors)
    return batch.events()


def _decode_items(body: bytes) -> WebhookEvents:
    """The typed pass failed somewhere: decode every item alone, apply the readable ones."""
    batch = Batch()
    try:
        items = jsondecode.decode(_items, body)
    except msgspec.ValidationError:
        items = _lists_of(body, batch)
    except msgspec.DecodeError as exc:
        raise WebhookError(f"not JSON: {exc}") from exc
    _reader.apply_each(batch, "", items.statuses, items.contacts, items.messages, items.errors)
    return batch.events()


def _lists_of(body: bytes, batch: Batch) -> _Items:
    """A top-level field that is not a list is reported and read as empty."""
    try:
        lists = jsondecode.decode(_lists, body)
    except msgspec.ValidationError as exc:
        raise WebhookError(f"not a webhook object: {exc}") from exc
    except msgspec.DecodeError as exc:  # the typed passes stopped at a field before the bad byte
        raise WebhookError(f"not JSON: {exc}") from exc
    found: dict[str, list[msgspec.Raw]] = {}
    for name in ("statuses", "contacts", "messages", "errors"):
        try:
            found[name] = jsondecode.decode(_raw_list, getattr(lists, name))
        except msgspec.DecodeError as exc:
            found[name] = []
            batch.note(Unapplied("bad_field", name, str(exc)[:300]))
    return _Items(**found)


def _add_status(batch: Batch, status: _Status, where: str) -> None:
    timestamp = status.timestamp
    if not (0 < len(timestamp) <= 12 and timestamp.isascii() and timestamp.isdigit()):
        # Not used to apply the status: noted, and the status still applies.
        batch.note(
            Unapplied("bad_field", f"{where}.timestamp", f"expected 1 to 12 digits, got {timestamp[:20]!r}")
        )
    twilio = STATUSES.get(status.status)
    if twilio is None:
        batch.unmapped(status.status, IGNORED_STATUSES, where)
        return
    code = message = None
    if status.errors:
        first = status.errors[0]
        code = TWILIO_CODE.get(first.code, GENERIC_FAILURE)
        message = first.title or first.details or f"WhatsApp error {first.code}"
        if twilio == "failed" and first.code in UNDELIVERED_CODES:
            twilio = "undelivered"
    elif twilio == "failed":
        code, message = GENERIC_FAILURE, "WhatsApp reported the message failed"
    batch.statuses.append(
        StatusEvent(
            channel_id=status.id,
            status=twilio,
            error_code=code,
            error_message=message,
            recipient=_digits(status.recipient_id),
        )
    )


def _digits(wa_id: str) -> str:
    if wa_id.isascii() and wa_id.isdigit():
        return wa_id  # the usual case: no regex pass per status
    return _DIGITS.sub("", wa_id)


def _error_event(error: _Error) -> ChannelError:
    return ChannelError(error.code, error.title or error.details)


_reader: Final = ItemReader(
    status_decoder=msgspec.json.Decoder(_Status),
    error_decoder=msgspec.json.Decoder(_Error),
    add_status=_add_status,
    error_event=_error_event,
)
