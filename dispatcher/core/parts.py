"""A stored message -> the channel messages it goes out as, in order.

One Twilio message may become several WhatsApp messages: a long body becomes
text segments, each MediaUrl a media message (the Body as the first one's
caption), a template exactly one template message. The outbox holds one entry
per part (``OutboxEntry.part``), and the channel encodes ``plan(record)[part]``.

Pure and deterministic, so the plan computed at create time (how many outbox
entries) and the one the actor computes at send time always agree.
"""

from __future__ import annotations

from typing import Final

import attrs

from dispatcher.core import media, segments
from dispatcher.core.models import MessageRecord, TemplateSend

CAPTION_LIMIT: Final = 1024  # WhatsApp's caption length limit


@attrs.frozen
class TextPart:
    body: str


@attrs.frozen
class MediaPart:
    item: media.MediaItem
    caption: str | None = None


@attrs.frozen
class TemplatePart:
    template: TemplateSend


Part = TextPart | MediaPart | TemplatePart


def plan(record: MessageRecord, text_limit: int = segments.TEXT_LIMIT) -> list[Part]:
    """Every channel message of ``record``, in sending order."""
    if record.template is not None:
        return [TemplatePart(record.template)]
    if not record.media_urls:
        return [TextPart(s) for s in segments.split(record.body, text_limit)]
    items = [media.classify(url) for url in record.media_urls]
    body = record.body
    out: list[Part] = []
    first = items[0]
    if body and first.kind in media.CAPTIONED and len(body) <= CAPTION_LIMIT:
        out.append(MediaPart(first, caption=body))
        body = ""
    else:
        out.append(MediaPart(first))
    out.extend(MediaPart(item) for item in items[1:])
    # A body no caption can carry (audio/sticker first, or too long) follows as text.
    if body:
        out.extend(TextPart(s) for s in segments.split(body, text_limit))
    return out


def sole_text(record: MessageRecord, part: int) -> str | None:
    """The body, when part ``part`` is all of ``record`` and plain text that fits one text
    message (most messages): what ``plan(record)[part]`` holds then, without planning.
    None: ask ``plan`` (a body over the limit is one part when only whitespace is over it,
    and that whitespace is dropped at the cut).
    """
    if (
        part == 0
        and record.template is None
        and not record.media_urls
        and record.parts == 1
        and len(record.body) <= segments.TEXT_LIMIT
    ):
        return record.body
    return None


def num_segments(record: MessageRecord, text_limit: int = segments.TEXT_LIMIT) -> int:
    """Twilio's ``num_segments``: the text messages a plain body needs, else 1."""
    if record.template is not None or record.media_urls:
        return 1
    return segments.count(record.body, text_limit)
