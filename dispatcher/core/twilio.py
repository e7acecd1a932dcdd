"""Twilio Programmable Messaging wire format: Message resource JSON and error JSON.

Shapes follow twilio-oai's ``api.v2010.account.message`` schema: counts are
strings, dates are RFC 2822 with ``+0000`` (twilio-python ignores the offset
and reads them as UTC), addresses carry their channel's prefix (``whatsapp:``, ``line:``; none
for SMS).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final

import msgspec

from dispatcher.core.models import MessageRecord
from dispatcher.core.store import StaleEpochError, StoreError

API_VERSION: Final = "2010-04-01"
CHANNEL_PREFIX: Final = "whatsapp:"


class SubresourceUris(msgspec.Struct):
    media: str


class MessageResource(msgspec.Struct):
    account_sid: str
    api_version: str
    body: str
    date_created: str
    date_sent: str | None
    date_updated: str
    direction: str
    error_code: int | None
    error_message: str | None
    from_: str = msgspec.field(name="from")
    messaging_service_sid: str | None = None
    num_media: str = "0"
    num_segments: str = "1"
    price: str | None = None
    price_unit: str | None = None
    sid: str = ""
    status: str = "queued"
    subresource_uris: SubresourceUris | None = None
    to: str = ""
    uri: str = ""
    # Our extension, present only on linked messages (README "Fallback"): the message's fallback,
    # the message a fallback stands in for, why a fallback could not be created.
    fallback_sid: str | msgspec.UnsetType = msgspec.UNSET
    primary_sid: str | msgspec.UnsetType = msgspec.UNSET
    fallback_error: str | msgspec.UnsetType = msgspec.UNSET


class ErrorBody(msgspec.Struct):
    code: int
    message: str
    more_info: str
    status: int


_encoder: Final = msgspec.json.Encoder()


def rfc2822(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def message_uri(account_sid: str, sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"


def render_message(record: MessageRecord) -> MessageResource:
    uri = message_uri(record.account_sid, record.sid)
    return MessageResource(
        account_sid=record.account_sid,
        api_version=API_VERSION,
        body=record.body,
        date_created=rfc2822(record.date_created),
        date_sent=None if record.date_sent is None else rfc2822(record.date_sent),
        date_updated=rfc2822(record.date_updated),
        direction=record.direction,
        error_code=record.error_code,
        error_message=record.error_message,
        from_=record.address_prefix + record.from_number,
        messaging_service_sid=record.messaging_service_sid,
        num_media=str(record.num_media),
        num_segments=str(record.num_segments),
        sid=record.sid,
        status=record.status,
        subresource_uris=SubresourceUris(media=uri[: -len(".json")] + "/Media.json"),
        to=record.address_prefix + record.to_number,
        uri=uri,
        fallback_sid=msgspec.UNSET if record.fallback_sid is None else record.fallback_sid,
        primary_sid=msgspec.UNSET if record.primary_sid is None else record.primary_sid,
        fallback_error=msgspec.UNSET if record.fallback_error is None else record.fallback_error,
    )


def encode_message(record: MessageRecord) -> bytes:
    return _encoder.encode(render_message(record))


class TwilioError(Exception):
    """An API error answered in Twilio's JSON shape with Twilio's code."""

    def __init__(self, status: int, code: int, message: str, *, retry_after: int | None = None) -> None:
        """``retry_after``: seconds for a ``Retry-After`` header (a 503 that will pass by itself)."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The answer's extra headers: ``Retry-After`` when set."""
        return [] if self.retry_after is None else [(b"retry-after", str(self.retry_after).encode())]

    def error_body(self) -> ErrorBody:
        return ErrorBody(
            code=self.code,
            message=self.message,
            more_info=f"https://www.twilio.com/docs/errors/{self.code}",
            status=self.status,
        )

    def body(self) -> bytes:
        return _encoder.encode(self.error_body())


OWNERSHIP_RETRY_AFTER: Final = 1  # seconds: as long as a bucket takes to settle on an owner, about


def store_unavailable(exc: StoreError, what: str) -> TwilioError:
    """The 503 for a write that failed (``what``: "the message", "the change", ...). A bucket this
    daemon does not own right now (its lease is suspended without quorum, or a newer owner took
    it: ``StaleEpochError``) passes by itself: the answer says so, with ``Retry-After``, as the
    forwarder's answer for a bucket without an owner does."""
    if isinstance(exc, StaleEpochError):
        return TwilioError(
            503,
            20503,
            f"Service unavailable: {what} could not be stored, as its bucket is changing owner "
            "(or its owner lost the cluster's quorum); nothing was stored. Retry shortly.",
            retry_after=OWNERSHIP_RETRY_AFTER,
        )
    return TwilioError(503, 20503, f"Service unavailable: {what} could not be stored.")
