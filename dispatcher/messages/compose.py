"""The WhatsApp content of a create request: text, media, template, validity.

Turns the content parameters of a Twilio create (Body, MediaUrl, ContentSid,
ContentVariables, ValidityPeriod) into the fields of the stored message, with
Twilio's error codes for every bad input. Which sender and whether the window
allows it are the gateway's business; this module only knows the content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from dispatcher.core import media, parts, segments
from dispatcher.core.models import MessageRecord, TemplateSend
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.templates import TemplateRegistry

MAX_VALIDITY: Final = 36_000  # seconds: Twilio's maximum (and default) ValidityPeriod


@attrs.frozen
class Content:
    body: str
    media_urls: list[str]
    template: TemplateSend | None
    validity: int | None  # seconds, if the request gave one

    @property
    def free_form(self) -> bool:
        """Needs the customer's 24 h window (anything but a template)."""
        return self.template is None


def compose(
    account_sid: str,
    *,
    body: str | None,
    media_urls: Sequence[str],
    content_sid: str | None,
    content_variables: str | None,
    validity_period: str | None,
    templates: TemplateRegistry | None,
    max_body: int,
    waba: str | None = None,
    match: bool = True,
) -> Content:
    """Validate the content parameters; raise TwilioError with Twilio's code for the first bad one.

    ``waba``: the sender's WhatsApp Business Account, whose synced templates it may send.
    ``match``: a Body equal to a template's text goes as that template (a WhatsApp sender's
    rule; an SMS sender sends the text as it is)."""
    validity = parse_validity(validity_period)
    if content_variables is not None and not content_sid:
        raise TwilioError(400, 21654, "ContentSid is required when ContentVariables is given.")
    if content_sid:
        if templates is None:
            raise TwilioError(400, 21655, f"The ContentSid {content_sid} was not found for this account.")
        if media_urls:
            raise TwilioError(400, 21655, "ContentSid cannot be combined with MediaUrl.")
        template, rendered = templates.resolve(account_sid, content_sid, content_variables, waba=waba)
        return Content(body=rendered, media_urls=[], template=template, validity=validity)
    if len(media_urls) > media.MAX_MEDIA:
        raise TwilioError(
            400, 21623, f"Too many media URLs: {len(media_urls)} given, at most {media.MAX_MEDIA}."
        )
    urls: list[str] = []
    for url in media_urls:
        try:
            urls.append(media.check_url(url))
        except media.MediaUrlError as exc:
            raise TwilioError(400, 21620, str(exc)) from exc
    if not urls:
        text, matched = text_content(
            account_sid, body, templates=templates if match else None, max_body=max_body
        )
        return Content(body=text, media_urls=urls, template=matched, validity=validity)
    text = body or ""
    _check_length(text, max_body)
    if text.isspace():
        # No caption or text message can be blank: with media, a blank Body is no Body
        # (stored as sent, so the plan made now and the one made at send time agree).
        text = ""
    return Content(body=text, media_urls=urls, template=None, validity=validity)


def text_content(
    account_sid: str, body: str | None, *, templates: TemplateRegistry | None, max_body: int
) -> tuple[str, TemplateSend | None]:
    """A Body without media: the text and the template it is an instance of (Twilio's classic
    matching), or TwilioError (21602, 21617). ``compose`` without the other parameters.

    A Body of only whitespace is no message: WhatsApp refuses a blank text, and a long
    one would split into no segment at all.
    """
    text = body or ""
    if not text:
        raise TwilioError(400, 21602, "Message body is required.")
    if text.isspace():
        raise TwilioError(400, 21602, "Message body is required: a Body of only whitespace is not a message.")
    _check_length(text, max_body)
    matched = templates.match(account_sid, text) if templates is not None else None
    return text, matched


def _check_length(text: str, max_body: int) -> None:
    if len(text) > max_body:
        raise TwilioError(
            400, 21617, f"The concatenated message body exceeds the {max_body} character limit."
        )


def parse_validity(value: str | None) -> int | None:
    """``ValidityPeriod``: whole seconds, 1..36000; anything else is Twilio's 21624."""
    if value is None or value == "":
        return None
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = 0
    if not 1 <= seconds <= MAX_VALIDITY:
        raise TwilioError(
            400,
            21624,
            f"The ValidityPeriod {value!r} is invalid: give whole seconds from 1 to {MAX_VALIDITY}.",
        )
    return seconds


def apply(record: MessageRecord, content: Content, *, start: float) -> MessageRecord:
    """Fill ``record``'s content fields; ``start`` is when the validity period starts (now or SendAt)."""
    record.body = content.body
    record.media_urls = content.media_urls
    record.template = content.template
    record.num_media = len(content.media_urls)
    record.parts = (
        len(parts.plan(record)) if (content.media_urls or len(content.body) > segments.TEXT_LIMIT) else 1
    )
    record.num_segments = parts.num_segments(record)
    if content.validity is not None:
        record.valid_until = start + content.validity
    return record
