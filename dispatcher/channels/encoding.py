"""What the On-Prem and Cloud wire formats encode and read alike.

Both send one JSON body per channel message: a text, a media item by link, or a
template whose body placeholders are filled in order. The envelopes differ (Cloud
adds ``messaging_product``, names templates without a namespace, puts
``preview_url`` inside ``text``), so each channel keeps its own message structs;
the parts inside them, the choice of part, and the reading of a send's answer
(``{"messages": [{"id"}]}`` on both) are here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import msgspec

from actors.outcome import Outcome, Retry, Sent
from actors.transport import Headers
from dispatcher.core import parts
from dispatcher.core.models import MessageRecord, SendComponent, SendParam, TemplateSend

encoder: Final = msgspec.json.Encoder()
POST: Final = b"POST"
JSON_CONTENT: Final = (b"content-type", b"application/json")
JSON_HEAD: Final[Headers] = [JSON_CONTENT]
"""The headers of a WhatsApp send before its credentials (never mutated: ``authorize`` builds anew)."""


def wa_id(e164: str) -> str:
    """WhatsApp ids are the number's digits."""
    return e164.lstrip("+")


# -- parts of a message -------------------------------------------------------------


class Link(msgspec.Struct, omit_defaults=True):
    """A media item by URL: ``{"link", "caption"?, "filename"?}``."""

    link: str
    caption: str | None = None
    filename: str | None = None


class TextParam(msgspec.Struct):
    text: str
    type: str = "text"


class Component(msgspec.Struct):
    type: str
    parameters: list[TextParam]


def body_components(template: TemplateSend) -> list[Component] | None:
    """A template's ``components``: its body placeholders filled in order ({{1}}, {{2}}, ...), if any."""
    if not template.params:
        return None
    return [Component("body", [TextParam(value) for value in template.params])]


class MediaLink(msgspec.Struct, omit_defaults=True):
    link: str
    filename: str | None = None


class RichParam(msgspec.Struct, omit_defaults=True):
    """A template parameter of any type (reference §1.6): one of its value fields is set."""

    type: str
    text: str | None = None
    parameter_name: str | None = None
    image: MediaLink | None = None
    video: MediaLink | None = None
    document: MediaLink | None = None
    payload: str | None = None
    coupon_code: str | None = None


class RichComponent(msgspec.Struct, omit_defaults=True):
    """A header, body or button component; a button's ``index`` is a string, as Meta's docs send it."""

    type: str
    parameters: list[RichParam]
    sub_type: str | None = None
    index: str | None = None


def _rich_param(param: SendParam) -> RichParam:
    name = param.name or None
    match param.type:
        case "text":
            return RichParam("text", text=param.value, parameter_name=name)
        case "image":
            return RichParam("image", image=MediaLink(param.value))
        case "video":
            return RichParam("video", video=MediaLink(param.value))
        case "document":
            return RichParam("document", document=MediaLink(param.value, _filename(param.value)))
        case "payload":
            return RichParam("payload", payload=param.value)
        case "coupon_code":
            return RichParam("coupon_code", coupon_code=param.value)
    raise ValueError(f"unknown template parameter type {param.type!r}")


def _filename(link: str) -> str | None:
    """A document's file name, as the customer sees it: the link's last path segment."""
    name = link.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name or None


def _rich(component: SendComponent) -> RichComponent:
    params = [_rich_param(p) for p in component.params]
    if component.type != "button":
        return RichComponent(component.type, params)
    return RichComponent("button", params, sub_type=component.sub_type, index=str(component.index))


def template_components(template: TemplateSend) -> list[Component] | list[RichComponent] | None:
    """What a template send carries: its components as resolved at create (header, body, buttons),
    or, for a file template, its body placeholders filled in order."""
    if template.components:
        return [_rich(c) for c in template.components]
    return body_components(template)


class MediaSlots(Protocol):
    """A channel's media message: one field per media kind, the one named by ``type`` set."""

    type: str


def with_media(message: MediaSlots, part: parts.MediaPart) -> MediaSlots:
    """``message`` with its ``image``/``video``/``audio``/``document``/``sticker`` set from ``part``."""
    item = part.item
    setattr(message, item.kind, Link(item.link, caption=part.caption, filename=item.filename))
    return message


class EncodeSend(Protocol):
    def __call__(self, record: MessageRecord, part: int = 0) -> bytes: ...


def send_encoder(
    text: Callable[[str, str], bytes], part_body: Callable[[str, parts.Part], bytes]
) -> EncodeSend:
    """A channel's ``encode_send(record, part)``: the send body for part ``part`` of a stored message.

    A message that is one text (the common case) goes straight to ``text``, without
    planning its parts; any other goes through ``parts.plan`` to ``part_body``. A
    closure, not an object: it runs once per send (a ``__call__`` cost ~100 ns more).
    """

    def encode_send(record: MessageRecord, part: int = 0) -> bytes:
        to = wa_id(record.to_number)
        body = parts.sole_text(record, part)
        if body is not None:
            return text(to, body)
        return part_body(to, parts.plan(record)[part])

    return encode_send


# -- answers --------------------------------------------------------------------------


class _MessageId(msgspec.Struct):
    id: str


class SendAnswer(msgspec.Struct):
    messages: list[_MessageId]


send_answer_decoder: Final = msgspec.json.Decoder(SendAnswer)


def sent(body: bytes) -> Outcome:
    """A success answer: ``Sent`` with the channel's message id, or an ambiguous ``Retry``.

    A 2xx with a body we cannot read probably sent the message: a retry could duplicate it.
    """
    try:
        return Sent(send_answer_decoder.decode(body).messages[0].id)
    except (msgspec.DecodeError, IndexError):
        return Retry("unreadable success answer", ambiguous=True)
