"""The part of TwiML an inbound-message webhook may answer with: ``<Response><Message>``.

Twilio sends each ``<Message>`` of the response back as a reply from the number
the customer wrote to. Either form is accepted::

    <Response><Message>Thanks!</Message></Response>
    <Response><Message><Body>Thanks!</Body></Message></Response>
    <Response><Message><Body>Here</Body><Media>https://a.example/x.jpg</Media></Message></Response>

``<Media>`` children become the reply's MediaUrls; the inbox checks them like
a create's (at most 10, syntax, SSRF guard) and drops a reply that fails.

The customer's endpoint is untrusted: the body is size-capped and any DOCTYPE
(entity expansion) is refused before parsing; anything unparseable yields no
reply and a log line, never an exception in the sender.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final

import attrs

MAX_TWIML: Final = 64 * 1024
MAX_REPLIES: Final = 10


class TwimlError(ValueError):
    """The webhook answer is not TwiML we can act on."""


@attrs.frozen
class Reply:
    body: str
    to: str | None = None  # ``to`` attribute; None means the customer who wrote
    media: tuple[str, ...] = ()  # ``<Media>`` URLs, in order


def replies(body: bytes) -> list[Reply]:
    """The ``<Message>`` replies of a TwiML answer; empty for an empty answer or ``<Response/>``.

    Raises:
        TwimlError: too large, a DOCTYPE, not XML, or not a ``<Response>``.
    """
    text = body.strip()
    if not text:
        return []
    if len(text) > MAX_TWIML:
        raise TwimlError(f"TwiML larger than {MAX_TWIML} bytes")
    if b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
        raise TwimlError("TwiML with a DOCTYPE or entity declaration is refused")
    try:
        root = ET.fromstring(text)  # DOCTYPE/entities refused above, size capped
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    found: list[Reply] = []
    for message in root.iter("Message"):
        body_el = message.find("Body")
        content = (body_el.text if body_el is not None else message.text) or ""
        content = content.strip()
        media = tuple(url for el in message.findall("Media") if (url := (el.text or "").strip()))
        if content or media:
            found.append(Reply(body=content, to=message.get("to"), media=media))
        if len(found) == MAX_REPLIES:
            break
    return found
