"""A customer's message object (the same in On-Prem ``messages[]`` and Cloud ``value.messages[]``) -> event.

Decoding never refuses a message of an authentic delivery: a message is
stored whenever it has an id and a sender, as what could be read of it.

- The kinds Twilio has a form for (text, media, location, contacts, button,
  list/button replies, system) are decoded into typed structs and flattened.
- A kind Twilio has no form for (reaction, order, unsupported, a Flows reply,
  one added next year) keeps the channel's type as ``kind`` and the readable
  text of its object (``body``, ``text``, ``emoji``, ``caption``...) as body.
- A message whose fields come in an unexpected form is read field by field
  (``_Peek``, every field typed ``object``) and stored the same way; one that
  is not valid JSON at all (a string that is not UTF-8, nesting too deep) is
  not stored: what it says cannot be known.
Each such message is also reported as ``Unapplied`` (logged and counted).
Only a message without an id or any sender id is not stored (nothing to
deduplicate it by or to answer): it is reported, with its type.

The sender is the customer's phone number (``from``) when the channel gives
it; a customer who adopted a username may come with only a business-scoped
user id (``US.1349...``, in ``from``, ``from_user_id`` or the contact's
``user_id``), which is then the sender.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

from dispatcher.core import jsondecode
from dispatcher.core.events import InboundEvent, MediaItem, Unapplied

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=65_536)]
Short = Annotated[str, msgspec.Meta(max_length=128)]
PHONE: Final = re.compile(r"^\+?[1-9][0-9]{6,14}$")
# Business-scoped user id: ISO country code, a dot, up to 128 alphanumerics (``US.ENT.1...`` too).
BSUID: Final = re.compile(r"^[A-Z]{2}\.[A-Za-z0-9.]{1,140}$")
_NON_DIGITS: Final = re.compile(r"[^0-9]")
GENERIC_MIME: Final = "application/octet-stream"
# The fields of an unknown kind's object that hold text a person wrote or sees.
_READABLE: Final = ("body", "text", "emoji", "caption", "title", "description", "name", "payload")
MAX_TYPE: Final = 32


class _Body(msgspec.Struct):
    body: Text


class _Media(msgspec.Struct, kw_only=True):
    id: Id
    # Any printable ASCII, spaces included: voice notes are ``audio/ogg; codecs=opus``.
    mime_type: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[ -~]+$")] = GENERIC_MIME
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
    id: Text = ""  # recorded webhooks without one exist (vumi-whatsapp's tests)
    title: Text = ""
    description: Text = ""


class _FlowReply(msgspec.Struct, kw_only=True):
    """A WhatsApp Flows completion (``interactive.type = "nfm_reply"``)."""

    response_json: Text = ""
    body: Text = ""
    name: Text = ""


class _Interactive(msgspec.Struct, kw_only=True):
    type: Short
    button_reply: _Reply | None = None
    list_reply: _Reply | None = None
    nfm_reply: _FlowReply | None = None


class _Context(msgspec.Struct, kw_only=True):
    id: Id | None = None
    forwarded: bool = False
    frequently_forwarded: bool = False


class _MessageError(msgspec.Struct, kw_only=True):
    """What the platform says it could not show (``unsupported`` / ``unknown`` messages carry one)."""

    code: int | str = 0
    title: Text = ""
    details: Text = ""


class _Message(msgspec.Struct, kw_only=True):
    id: Id
    type: Short
    sender: Short | None = msgspec.field(name="from", default=None)
    from_user_id: Short | None = None
    timestamp: Short = "0"
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
    errors: list[_MessageError] = []


class _Peek(msgspec.Struct):
    """Any message object, every field as it came: what the fallback reads from."""

    id: object = None
    type: object = None
    sender: object = msgspec.field(name="from", default=None)
    from_user_id: object = None
    timestamp: object = None


_message: Final = msgspec.json.Decoder(_Message)
_peek: Final = msgspec.json.Decoder(_Peek)
_object: Final = msgspec.json.Decoder(dict[str, object])
MEDIA_KINDS: Final = frozenset({"image", "video", "audio", "voice", "document", "sticker"})
KNOWN_KINDS: Final = MEDIA_KINDS | {
    "text",
    "location",
    "contacts",
    "button",
    "interactive",
    "system",
    "unknown",
}


class Profiles:
    """The delivery's ``contacts``: profile names by phone digits and by user id, and the user ids."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.user_ids: list[str] = []

    def add(self, wa_id: str | None, user_id: str | None, name: str) -> None:
        if wa_id:
            self.names[digits_of(wa_id)] = name
        if user_id:
            self.names[user_id] = name
            self.user_ids.append(user_id)

    def name(self, sender: str) -> str:
        return self.names.get(sender.lstrip("+"), "")


def digits_of(text: str) -> str:
    """``text`` without its non-digits (a wa_id is usually digits already: no regex then)."""
    return text if text.isdigit() and text.isascii() else _NON_DIGITS.sub("", text)


def sender_of(sender: str | None, from_user_id: str | None, profiles: Profiles) -> str | None:
    """The customer's address: ``+digits`` when a phone number is given, else a user id, else None."""
    if sender and PHONE.match(sender):
        return "+" + digits_of(sender)
    for candidate in (sender, from_user_id):
        if candidate and BSUID.match(candidate):
            return candidate
    if len(profiles.user_ids) == 1 and BSUID.match(profiles.user_ids[0]):
        return profiles.user_ids[0]  # a username-only customer: the delivery's one contact
    return None


def timestamp_of(text: str) -> float:
    """Unix seconds from the channel's string; 0 (meaning "now") if it is not 1-12 ASCII digits."""
    return float(text) if 0 < len(text) <= 12 and text.isascii() and text.isdigit() else 0.0


def decode(
    raw: msgspec.Raw | bytes, profiles: Profiles, where: str
) -> tuple[InboundEvent | None, Unapplied | None]:
    """One message: its event (None if it cannot be stored) and what could not be applied as it came."""
    try:
        message = jsondecode.decode(_message, raw)
    except msgspec.ValidationError as exc:  # JSON, in a form we did not expect: read what we can
        return _fallback(raw, profiles, where, "bad_message", str(exc))
    except msgspec.DecodeError as exc:  # not even JSON (a string not UTF-8, nesting too deep)
        return None, Unapplied("unstorable_message", where, f"not valid JSON: {exc}"[:300])
    sender = sender_of(message.sender, message.from_user_id, profiles)
    if sender is None:
        return None, Unapplied(
            "unstorable_message", where, f"no sender id (type {message.type[:MAX_TYPE]!r})"
        )
    if message.type not in KNOWN_KINDS:
        event = _event(message, sender, profiles, body=_readable(raw, message.type))
        detail = f"type {message.type!r} stored as it could be read{_errors(message)}"
        return event, Unapplied("unknown_type", where, detail)
    return _flatten(message, sender, profiles, raw, where)


def _errors(message: _Message) -> str:
    """The platform's own word on a message it could not show, for the log line."""
    if not message.errors:
        return ""
    first = message.errors[0]
    return f" (error {first.code}: {(first.title or first.details)[:100]})"


def _flatten(
    m: _Message, sender: str, profiles: Profiles, raw: msgspec.Raw | bytes, where: str
) -> tuple[InboundEvent, Unapplied | None]:
    match m.type:
        case "text" if m.text is not None:
            return _event(m, sender, profiles, body=m.text.body), None
        case "image" | "video" | "audio" | "voice" | "document" | "sticker" if getattr(m, m.type) is not None:
            item: _Media = getattr(m, m.type)
            body = item.caption or ""
            if m.type == "document" and not body and item.filename:
                body = item.filename
            return _event(m, sender, profiles, body=body, media=[MediaItem(item.id, item.mime_type)]), None
        case "location" if m.location is not None:
            loc = m.location
            event = _event(
                m,
                sender,
                profiles,
                latitude=loc.latitude,
                longitude=loc.longitude,
                address=loc.address,
                label=loc.name,
            )
            return event, None
        case "contacts" if m.contacts is not None:
            body = "\n".join(
                " ".join(filter(None, [c.name.formatted_name, *(p.phone for p in c.phones)]))
                for c in m.contacts
            )
            return _event(m, sender, profiles, body=body), None
        case "button" if m.button is not None:
            b = m.button
            return _event(
                m, sender, profiles, body=b.text, button_text=b.text, button_payload=b.payload
            ), None
        case "interactive" if m.interactive is not None:
            return _interactive(m, m.interactive, sender, profiles, where)
        case "system" if m.system is not None:
            return _event(m, sender, profiles, body=m.system.body), None
        case "unknown":
            return _event(m, sender, profiles, body=_readable(raw, m.type)), Unapplied(
                "unknown_type", where, f"type 'unknown' stored as it could be read{_errors(m)}"
            )
    event = _event(m, sender, profiles, body=_readable(raw, m.type))
    return event, Unapplied("bad_message", where, f"{m.type}: its {m.type!r} object is missing")


def _interactive(
    m: _Message, inter: _Interactive, sender: str, profiles: Profiles, where: str
) -> tuple[InboundEvent, Unapplied | None]:
    if inter.type == "button_reply" and inter.button_reply is not None:
        r = inter.button_reply
        return _event(m, sender, profiles, body=r.title, button_text=r.title, button_payload=r.id), None
    if inter.type == "list_reply" and inter.list_reply is not None:
        r = inter.list_reply
        return _event(m, sender, profiles, body=r.title, list_id=r.id, button_text=r.title), None
    if inter.type == "nfm_reply" and inter.nfm_reply is not None:
        # A Flows completion: the customer's answers are the response JSON (Twilio has no field
        # of its own for them), the button label ("Sent") is what the chat shows.
        flow = inter.nfm_reply
        return _event(
            m, sender, profiles, body=flow.response_json or flow.body, button_text=flow.body or None
        ), None
    event = _event(m, sender, profiles, body="")
    return event, Unapplied("unknown_type", where, f"interactive type {inter.type!r} stored without content")


def _event(
    m: _Message,
    sender: str,
    profiles: Profiles,
    *,
    body: str = "",
    media: list[MediaItem] | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    address: str | None = None,
    label: str | None = None,
    button_text: str | None = None,
    button_payload: str | None = None,
    list_id: str | None = None,
) -> InboundEvent:
    context = m.context
    return InboundEvent(
        channel_id=m.id,
        sender=sender,
        kind=m.type,
        timestamp=timestamp_of(m.timestamp),
        body=body,
        profile_name=profiles.name(sender),
        media=media or [],
        latitude=latitude,
        longitude=longitude,
        address=address,
        label=label,
        button_text=button_text,
        button_payload=button_payload,
        list_id=list_id,
        reply_to=context.id if context is not None else None,
        forwarded=context.forwarded if context is not None else False,
        frequently_forwarded=context.frequently_forwarded if context is not None else False,
    )


def _fallback(
    raw: msgspec.Raw | bytes, profiles: Profiles, where: str, reason: str, detail: str
) -> tuple[InboundEvent | None, Unapplied]:
    """A message whose fields came in an unexpected form: store what can be read of it."""
    try:
        peek = jsondecode.decode(_peek, raw)
    except msgspec.DecodeError:
        return None, Unapplied("unstorable_message", where, f"not a message object: {detail}"[:300])
    kind = peek.type[:MAX_TYPE] if isinstance(peek.type, str) and peek.type else "unsupported"
    msg_id = peek.id if isinstance(peek.id, str) and 0 < len(peek.id) <= 256 else None
    sender = sender_of(
        peek.sender if isinstance(peek.sender, str) else None,
        peek.from_user_id if isinstance(peek.from_user_id, str) else None,
        profiles,
    )
    if msg_id is None or sender is None:
        missing = "id" if msg_id is None else "sender id"
        return None, Unapplied("unstorable_message", where, f"no {missing} (type {kind!r}): {detail}"[:300])
    timestamp = timestamp_of(peek.timestamp) if isinstance(peek.timestamp, str) else 0.0
    event = InboundEvent(
        channel_id=msg_id,
        sender=sender,
        kind=kind,
        timestamp=timestamp,
        body=_readable(raw, kind),
        profile_name=profiles.name(sender),
    )
    return event, Unapplied(reason, where, detail[:300])


def _readable(raw: msgspec.Raw | bytes, kind: str) -> str:
    """The text a person would read in the message's ``kind`` object, if it has any."""
    try:
        message = jsondecode.decode(_object, raw)
    except msgspec.DecodeError:
        return ""
    part = message.get(kind)
    if isinstance(part, str):
        return part[:65_536]
    if isinstance(part, dict):
        for name in _READABLE:
            value = part.get(name)
            if isinstance(value, str) and value:
                return value[:65_536]
            if isinstance(value, dict) and isinstance(value.get("body"), str):
                return str(value["body"])[:65_536]
    return ""
