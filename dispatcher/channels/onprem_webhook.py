"""On-Premises API webhooks (flat ``statuses`` / ``contacts`` + ``messages`` / ``errors``) -> events.

Decoding is strict about what we use and lenient about the rest: unknown
fields are ignored (the platform adds fields without notice), but a missing
id, a non-numeric timestamp or a sender that is not a WhatsApp id rejects the
*whole* delivery before anything is applied, so a malformed or hostile body
changes nothing and gets a 400.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, TypeVar

import attrs
import msgspec

from dispatcher import jsondecode
from dispatcher.channels.onprem import TWILIO_CODE
from dispatcher.events import ChannelError, InboundEvent, MediaItem, StatusEvent, WebhookEvents

GENERIC_FAILURE: Final = 30008  # Twilio "Unknown error"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
WaId = Annotated[str, msgspec.Meta(pattern=r"^\+?[1-9][0-9]{6,14}$")]
Timestamp = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,12}$")]
Text = Annotated[str, msgspec.Meta(max_length=65_536)]
_DIGITS = re.compile(r"[^0-9]")
T = TypeVar("T")


class WebhookError(ValueError):
    """The webhook body is not a valid On-Prem webhook; nothing of it was applied."""


# -- the wire ---------------------------------------------------------------------


class _Error(msgspec.Struct, kw_only=True):
    code: int
    title: Text = ""
    details: Text = ""


class _Status(msgspec.Struct, kw_only=True):
    id: Id
    status: Annotated[str, msgspec.Meta(max_length=32)]
    # Checked by _status as ``Timestamp`` would: msgspec's pattern check was ~0.5 us of
    # the ~0.9 us a status took to decode (a delivery carries hundreds).
    timestamp: str = "0"
    recipient_id: Annotated[str, msgspec.Meta(max_length=32)] = ""
    errors: list[_Error] = []


class _Profile(msgspec.Struct, frozen=True):
    name: Text = ""


class _Contact(msgspec.Struct):
    wa_id: WaId
    profile: _Profile = _Profile()


class _Body(msgspec.Struct):
    body: Text


class _Media(msgspec.Struct, kw_only=True):
    id: Id
    mime_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[!-~]+$")]
    sha256: str = ""
    caption: Text | None = None
    filename: Text | None = None


class _Location(msgspec.Struct, kw_only=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    longitude: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
    name: Text | None = None
    address: Text | None = None
    url: Text | None = None


class _ContactName(msgspec.Struct, frozen=True):
    formatted_name: Text = ""


class _ContactPhone(msgspec.Struct):
    phone: Text = ""


class _SharedContact(msgspec.Struct):
    name: _ContactName = _ContactName()
    phones: list[_ContactPhone] = []


class _Button(msgspec.Struct):
    text: Text = ""
    payload: Text = ""


class _Reply(msgspec.Struct):
    id: Text
    title: Text = ""
    description: Text = ""


class _Interactive(msgspec.Struct, kw_only=True):
    type: Annotated[str, msgspec.Meta(max_length=32)]
    button_reply: _Reply | None = None
    list_reply: _Reply | None = None


class _Context(msgspec.Struct, kw_only=True):
    id: Id | None = None
    forwarded: bool = False
    frequently_forwarded: bool = False


class _Message(msgspec.Struct, kw_only=True):
    sender: WaId = msgspec.field(name="from")
    id: Id
    type: Annotated[str, msgspec.Meta(max_length=32)]
    timestamp: Timestamp = "0"
    context: _Context | None = None
    text: _Body | None = None
    image: _Media | None = None
    video: _Media | None = None
    audio: _Media | None = None
    voice: _Media | None = None
    document: _Media | None = None
    sticker: _Media | None = None
    location: _Location | None = None
    contacts: list[_SharedContact] | None = None
    button: _Button | None = None
    interactive: _Interactive | None = None
    system: _Body | None = None


class _Webhook(msgspec.Struct, kw_only=True):
    statuses: list[_Status] = []
    contacts: list[_Contact] = []
    messages: list[_Message] = []
    errors: list[_Error] = []


_decoder: Final = msgspec.json.Decoder(_Webhook)

# WhatsApp status -> Twilio status. ``deleted`` (the customer deleted the message)
# has no Twilio equivalent: it is acknowledged and changes nothing.
STATUSES: Final = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
IGNORED_STATUSES: Final = frozenset({"deleted", "warning"})
# A failed status for these codes means WhatsApp accepted the message and could not
# deliver it in time: Twilio calls that ``undelivered``.
UNDELIVERED_CODES: Final = frozenset({410})
MEDIA_KINDS: Final = ("image", "video", "audio", "voice", "document", "sticker")


def decode(body: bytes) -> WebhookEvents:
    """Decode and validate a webhook body into channel-neutral events.

    Raises:
        WebhookError: anything malformed; nothing of the body should be applied.
    """
    try:
        hook = jsondecode.decode(_decoder, body)
    except msgspec.ValidationError as exc:
        raise WebhookError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise WebhookError(f"not JSON: {exc}") from exc
    statuses: list[StatusEvent] = []
    ignored = 0
    for i, status in enumerate(hook.statuses):
        event = _status(status, i)
        if event is None:
            ignored += 1
        else:
            statuses.append(event)
    profiles = {_digits(c.wa_id): c.profile.name for c in hook.contacts}
    inbound = [_inbound(m, profiles.get(_digits(m.sender), ""), i) for i, m in enumerate(hook.messages)]
    errors = [ChannelError(e.code, e.title or e.details) for e in hook.errors]
    return WebhookEvents(statuses=statuses, inbound=inbound, errors=errors, ignored=ignored)


def _status(status: _Status, i: int) -> StatusEvent | None:
    timestamp = status.timestamp
    if not (0 < len(timestamp) <= 12 and timestamp.isascii() and timestamp.isdigit()):
        raise WebhookError(f"statuses[{i}].timestamp: expected 1 to 12 digits, got {timestamp[:20]!r}")
    if status.status in IGNORED_STATUSES:
        return None
    twilio = STATUSES.get(status.status)
    if twilio is None:
        raise WebhookError(f"statuses[{i}].status: unknown status {status.status!r}")
    code = message = None
    if status.errors:
        first = status.errors[0]
        code = TWILIO_CODE.get(first.code, GENERIC_FAILURE)
        message = first.title or first.details or f"WhatsApp error {first.code}"
        if twilio == "failed" and first.code in UNDELIVERED_CODES:
            twilio = "undelivered"
    elif twilio == "failed":
        code, message = GENERIC_FAILURE, "WhatsApp reported the message failed"
    return StatusEvent(
        channel_id=status.id,
        status=twilio,
        error_code=code,
        error_message=message,
        recipient=_digits(status.recipient_id),
    )


@attrs.frozen
class _Extra:
    """The type-specific fields of an inbound message."""

    latitude: float | None = None
    longitude: float | None = None
    address: str | None = None
    label: str | None = None
    button_text: str | None = None
    button_payload: str | None = None
    list_id: str | None = None


def _inbound(m: _Message, profile_name: str, i: int) -> InboundEvent:
    where = f"messages[{i}]"
    extra = _Extra()
    media: list[MediaItem] = []
    body = ""
    match m.type:
        case "text":
            body = _need(m.text, where, "text").body
        case "image" | "video" | "audio" | "voice" | "document" | "sticker":
            item = _need(getattr(m, m.type), where, m.type)
            media.append(MediaItem(item.id, item.mime_type))
            body = item.caption or ""
            if m.type == "document" and not body and item.filename:
                body = item.filename
        case "location":
            loc = _need(m.location, where, "location")
            extra = _Extra(
                latitude=loc.latitude, longitude=loc.longitude, address=loc.address, label=loc.name
            )
        case "contacts":
            shared = _need(m.contacts, where, "contacts")
            body = "\n".join(
                " ".join(filter(None, [c.name.formatted_name, *(p.phone for p in c.phones)])) for c in shared
            )
        case "button":
            button = _need(m.button, where, "button")
            body = button.text
            extra = _Extra(button_text=button.text, button_payload=button.payload)
        case "interactive":
            inter = _need(m.interactive, where, "interactive")
            if inter.type == "button_reply":
                reply = _need(inter.button_reply, where, "interactive.button_reply")
                body = reply.title
                extra = _Extra(button_text=reply.title, button_payload=reply.id)
            elif inter.type == "list_reply":
                reply = _need(inter.list_reply, where, "interactive.list_reply")
                body = reply.title
                extra = _Extra(list_id=reply.id, button_text=reply.title)
            else:
                raise WebhookError(f"{where}.interactive.type: unknown type {inter.type!r}")
        case "system":
            body = _need(m.system, where, "system").body
        case "unknown":
            body = ""
        case _:
            raise WebhookError(f"{where}.type: unknown message type {m.type!r}")
    context = m.context
    return InboundEvent(
        channel_id=m.id,
        sender="+" + _digits(m.sender),
        kind=m.type,
        timestamp=float(m.timestamp),
        body=body,
        profile_name=profile_name,
        media=media,
        reply_to=context.id if context is not None else None,
        forwarded=context.forwarded if context is not None else False,
        frequently_forwarded=context.frequently_forwarded if context is not None else False,
        latitude=extra.latitude,
        longitude=extra.longitude,
        address=extra.address,
        label=extra.label,
        button_text=extra.button_text,
        button_payload=extra.button_payload,
        list_id=extra.list_id,
    )


def _need(value: T | None, where: str, field: str) -> T:
    if value is None:
        raise WebhookError(f"{where}.{field}: required for this message type")
    return value


def _digits(wa_id: str) -> str:
    if wa_id.isascii() and wa_id.isdigit():
        return wa_id  # the usual case: no regex pass per status
    return _DIGITS.sub("", wa_id)
