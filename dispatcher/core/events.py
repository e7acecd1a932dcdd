"""Channel-neutral webhook events: what a channel adapter decodes WhatsApp's webhooks into.

The On-Prem and Cloud adapters both turn their payloads into these, and
``dispatcher.webhooks.inbox`` applies them (statuses move messages forward, inbound
messages become Messages records and customer webhooks). Statuses already use
Twilio's names and error codes, so nothing above the adapter knows the channel.

An authentic delivery is never refused for what it carries: what cannot be
applied as it is (an unknown status, a field in an unexpected form, another
number's change) becomes an ``Unapplied`` note, logged and counted by the inbox,
and a customer message we cannot flatten is still stored, as what could be read.
"""

from __future__ import annotations

import msgspec


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery report for one of our outbound messages."""

    channel_id: str  # the channel's message id (wamid) we stored at send time
    status: str  # Twilio status: sent | delivered | read | failed | undelivered
    error_code: int | None = None  # Twilio error code, for failed / undelivered
    error_message: str | None = None
    recipient: str = ""  # the customer's WhatsApp id (digits)


class MediaItem(msgspec.Struct, frozen=True):
    """A media file attached to an inbound message, still held by the channel."""

    media_id: str
    content_type: str


class InboundEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's message to one of our numbers, flattened to what Twilio's webhook carries."""

    channel_id: str  # the channel's message id: inbound messages are deduplicated on it
    # E.164 of the customer, or their business-scoped user id (``US.1349...``) when the
    # channel withholds the phone number of a customer who adopted a username.
    sender: str
    # text, image, video, audio, document, sticker, location, contacts, button, interactive,
    # or the channel's own type for what Twilio has no form for (reaction, order, unsupported...).
    kind: str
    timestamp: float  # Unix seconds, as the channel reported
    body: str = ""
    profile_name: str = ""
    media: list[MediaItem] = []
    latitude: float | None = None
    longitude: float | None = None
    address: str | None = None
    label: str | None = None
    button_text: str | None = None
    button_payload: str | None = None
    list_id: str | None = None  # interactive list_reply id
    reply_to: str | None = None  # channel id of the message this one answers (context)
    forwarded: bool = False
    frequently_forwarded: bool = False


class ChannelError(msgspec.Struct, frozen=True):
    """A channel-level error with no message attached (logged, counted)."""

    code: int
    title: str = ""


class Unapplied(msgspec.Struct, frozen=True):
    """An item of an authentic delivery that could not be applied as it came (logged, counted)."""

    reason: str  # a short fixed label, used as a metrics label: unknown_status, bad_status, ...
    where: str  # its position in the payload, e.g. ``entry[0].changes[1].value.statuses[3]``
    detail: str = ""  # what was wrong, truncated


class WebhookEvents(msgspec.Struct, frozen=True):
    """Everything one channel webhook delivery carried."""

    statuses: list[StatusEvent] = []
    inbound: list[InboundEvent] = []
    errors: list[ChannelError] = []
    ignored: int = 0  # items understood but with nothing to do (e.g. ``deleted``)
    unapplied: list[Unapplied] = []
