"""Validation of ``POST /v1/messages`` bodies, with the error codes the real API uses.

msgspec does the structural checks while decoding (types, enums, required
fields of nested objects); the rules it cannot express (the object named by
``type`` must be present, media needs ``id`` or ``link``, text length) follow.
Malformed JSON is 1025, a missing parameter 1008, a bad value 1009, a text
longer than 4096 characters 1001.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs
import msgspec

from dispatcher.simulator import errors
from dispatcher.simulator.wire import Media, Object, SendRequest, decode_send

MAX_TEXT = 4096
T = TypeVar("T")

Content = str | msgspec.Struct | list[Object]
"""What ``received()`` keeps of a message: a text's body, else the type's object."""


@attrs.frozen
class Outgoing:
    """A valid send request, reduced to what the simulator records."""

    recipient: str
    """The recipient's WhatsApp id: digits, no ``+``."""
    type: str
    content: Content


def parse_send(body: bytes) -> Outgoing:
    """Decode and check one request body.

    Raises:
        ApiError: 400 with code 1025, 1008, 1009 or 1001.
    """
    req = decode_body(decode_send, body)
    recipient = req.to[1:] if req.to.startswith("+") else req.to
    if not (5 <= len(recipient) <= 15 and recipient.isascii() and recipient.isdigit()):
        raise errors.invalid(f"Parameter 'to' is not a valid WhatsApp id: {req.to!r}")
    return Outgoing(recipient=recipient, type=req.type, content=_content(req))


def decode_body(decoder: Callable[[bytes], T], body: bytes) -> T:
    """Decode a JSON request body; 400 with 1025 (not JSON), 1008 (missing) or 1009 (bad value)."""
    try:
        return decoder(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        raise (errors.missing(text) if "missing required field" in text else errors.invalid(text)) from exc
    except msgspec.DecodeError as exc:
        raise errors.bad_request(f"Request body is not valid JSON: {exc}") from exc


def _content(req: SendRequest) -> Content:
    kind = req.type
    if kind == "text":
        if req.text is None:
            raise _absent(kind)
        size = len(req.text.body)
        if size == 0:
            raise errors.missing("Parameter 'text.body' is required")
        if size > MAX_TEXT:
            raise errors.ApiError(
                400, errors.MESSAGE_TOO_LONG, f"text.body has {size} characters, at most {MAX_TEXT}"
            )
        return req.text.body
    if kind in ("image", "audio", "video", "document", "sticker"):
        return _media(kind, req)
    found: Content | None
    match kind:
        case "location":
            found = req.location
        case "contacts":
            found = req.contacts
        case "template":
            found = req.template
        case "hsm":
            found = req.hsm
        case _:  # "interactive", the last value msgspec lets through
            found = req.interactive
            if found is not None and found.body is None and found.type in ("button", "list"):
                raise errors.missing(f"Parameter 'interactive.body' is required for a {found.type}")
    if found is None:
        raise _absent(kind)
    return found


def _media(kind: str, req: SendRequest) -> Media:
    media = {
        "image": req.image,
        "audio": req.audio,
        "video": req.video,
        "document": req.document,
        "sticker": req.sticker,
    }[kind]
    if media is None:
        raise _absent(kind)
    if media.id is None and media.link is None:
        raise errors.missing(f"Parameter '{kind}.id' or '{kind}.link' is required")
    return media


def _absent(kind: str) -> errors.ApiError:
    return errors.missing(f"Parameter '{kind}' is required for type '{kind}'")
