"""Inbound media, served the way Twilio serves it, behind the account's auth.

``GET .../Messages/{MessageSid}/Media/{MediaSid}`` streams the file the
customer sent, fetched on demand from the number's WhatsApp API
(``GET /v1/media/{id}`` with the number's token): we keep the WhatsApp media
id, not the bytes. The file is relayed as it arrives, within its kind's size
limit, one deadline and the download slots (``dispatcher.messages.inbound_media``); a
media id that is not one is never put into a path (``dispatcher.core.urlpath``).
``.../Media.json`` lists a message's media.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec
import structlog
import trio
from quart import Response
from quart import request as current_request
from quart_trio import QuartTrio

from actors.transport import BodyStream, RequestTimeout, ResponseTooLargeError, TransportError
from dispatcher.config import MediaConfig
from dispatcher.core.models import MessageRecord, StoredMedia
from dispatcher.core.twilio import API_VERSION, TwilioError, rfc2822
from dispatcher.core.urlpath import IdError
from dispatcher.messages.auth import Authenticator
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.handoff import Handoff
from dispatcher.messages.inbound_media import DownloadSlots, Relay, Slot, limit_for

log = structlog.get_logger()


class MediaResource(msgspec.Struct):
    sid: str
    account_sid: str
    parent_sid: str
    content_type: str
    date_created: str
    date_updated: str
    uri: str


class MediaList(msgspec.Struct):
    media_list: list[MediaResource]
    first_page_uri: str
    next_page_uri: str | None
    previous_page_uri: str | None
    page: int
    page_size: int
    start: int
    end: int
    uri: str


_encoder: Final = msgspec.json.Encoder()


def _resource(record: MessageRecord, media: StoredMedia) -> MediaResource:
    base = f"/{API_VERSION}/Accounts/{record.account_sid}/Messages/{record.sid}/Media"
    return MediaResource(
        sid=media.sid,
        account_sid=record.account_sid,
        parent_sid=record.sid,
        content_type=media.content_type,
        date_created=rfc2822(record.date_created),
        date_updated=rfc2822(record.date_updated),
        uri=f"{base}/{media.sid}.json",
    )


def register_media_routes(
    app: QuartTrio,
    *,
    auth: Authenticator,
    gateway: Gateway,
    handoff: Handoff,
    config: MediaConfig | None = None,
) -> None:
    """``gateway`` fetches the message; ``handoff`` finds the actor of the number that received it
    (it downloads with that number's credentials)."""
    config = config or MediaConfig()
    slots = DownloadSlots(per_number=config.per_number, total=config.concurrency)
    prefix = f"/{API_VERSION}/Accounts/<account_sid>/Messages/<sid>/Media"

    @app.get(f"{prefix}.json")
    async def list_media(account_sid: str, sid: str) -> Response:
        auth.authenticate(current_request.headers.get("Authorization"), account_sid)
        record = gateway.fetch(account_sid, sid)
        items = [_resource(record, m) for m in record.media]
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"
        page = MediaList(
            media_list=items,
            first_page_uri=uri + "?PageSize=50&Page=0",
            next_page_uri=None,
            previous_page_uri=None,
            page=0,
            page_size=50,
            start=0,
            end=max(len(items) - 1, 0),
            uri=uri,
        )
        return Response(_encoder.encode(page), status=200, content_type="application/json")

    @app.get(f"{prefix}/<media_sid>")
    async def get_media(account_sid: str, sid: str, media_sid: str) -> Response:
        auth.authenticate(current_request.headers.get("Authorization"), account_sid)
        record = gateway.fetch(account_sid, sid)
        name, _, ext = media_sid.partition(".")
        media = next((m for m in record.media if m.sid == name), None)
        if media is None or ext not in ("", "json"):
            raise TwilioError(404, 20404, f"The requested resource {current_request.path} was not found")
        if ext == "json":
            return Response(
                _encoder.encode(_resource(record, media)), status=200, content_type="application/json"
            )
        actor = handoff.actor(record.to_number)
        if actor is None:
            raise TwilioError(404, 20404, "The number that received this media is no longer configured")
        where = {"number": record.to_number, "sid": sid}
        slot = slots.take(record.to_number)
        if slot is None:
            raise TwilioError(429, 20429, "Too many media downloads at once; try again shortly")
        deadline = trio.current_time() + config.deadline
        stream = await _open(actor.open_media, media, deadline, slot, where)
        if stream.status != 200:
            stream.close()
            slot.release()
            if stream.status == 404:
                raise TwilioError(404, 20404, "WhatsApp no longer holds this media")
            log.warning("media.fetch_failed", **where, status=stream.status)
            raise TwilioError(502, 20500, f"WhatsApp answered HTTP {stream.status} for this media")
        response = Response(Relay(stream, slot, where), status=200, content_type=media.content_type)
        if stream.length is not None:
            response.headers["Content-Length"] = str(stream.length)
        # Quart bounds the sending of the body by this (its default, RESPONSE_TIMEOUT, is 60 s).
        response.timeout = max(0.0, deadline - trio.current_time())
        return response


class _Opener(Protocol):
    async def __call__(self, media_id: str, *, limit: int, deadline: float) -> BodyStream: ...


async def _open(
    open_media: _Opener,
    media: StoredMedia,
    deadline: float,
    slot: Slot,
    where: dict[str, str],
) -> BodyStream:
    """The download's response head, within the deadline; the slot is released on any failure."""
    try:
        with trio.move_on_at(deadline):  # the wait for a token too
            return await open_media(media.channel_media_id, limit=limit_for(media.kind), deadline=deadline)
        raise RequestTimeout("no media answer in time")
    except BaseException as exc:
        slot.release()
        if isinstance(exc, IdError):
            log.warning("media.bad_id", **where, error=str(exc))
            raise TwilioError(404, 20404, "This media has no valid WhatsApp media id") from exc
        if isinstance(exc, ValueError):
            log.warning("media.bad_location", **where, error=str(exc))
            raise TwilioError(502, 20500, "WhatsApp's answer for this media could not be read") from exc
        if isinstance(exc, ResponseTooLargeError):
            log.warning("media.too_large", **where, kind=media.kind, announced=exc.announced)
            raise TwilioError(
                502, 20500, f"The media is larger than WhatsApp allows for its kind ({exc.limit} bytes)"
            ) from exc
        if isinstance(exc, RequestTimeout):
            log.warning("media.fetch_timeout", **where)
            raise TwilioError(504, 20504, "WhatsApp did not return the media in time") from exc
        if isinstance(exc, TransportError):
            log.warning("media.fetch_failed", **where, error=str(exc))
            raise TwilioError(502, 20500, "The media could not be fetched from WhatsApp") from exc
        raise
