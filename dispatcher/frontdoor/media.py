"""Inbound media, served the way Twilio serves it, behind the account's auth.

``GET .../Messages/{MessageSid}/Media/{MediaSid}`` streams the file the
customer sent, fetched on demand from the number's WhatsApp API
(``GET /v1/media/{id}`` with the number's token): we keep the WhatsApp media
id, not the bytes. ``.../Media.json`` lists a message's media.
"""

from __future__ import annotations

from typing import Final

import msgspec
import structlog
import trio
from quart import Response
from quart import request as current_request
from quart_trio import QuartTrio

from actors.transport import TransportError
from dispatcher.frontdoor.twilio import API_VERSION, TwilioError, rfc2822
from dispatcher.gateway import Gateway
from dispatcher.models import MessageRecord, StoredMedia

log = structlog.get_logger()

MAX_MEDIA: Final = 100 << 20
FETCH_TIMEOUT: Final = 30.0


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


def register_media_routes(app: QuartTrio, gateway: Gateway) -> None:
    prefix = f"/{API_VERSION}/Accounts/<account_sid>/Messages/<sid>/Media"

    @app.get(f"{prefix}.json")
    async def list_media(account_sid: str, sid: str) -> Response:
        gateway.authenticate(current_request.headers.get("Authorization"), account_sid)
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
        gateway.authenticate(current_request.headers.get("Authorization"), account_sid)
        record = gateway.fetch(account_sid, sid)
        name, _, ext = media_sid.partition(".")
        media = next((m for m in record.media if m.sid == name), None)
        if media is None or ext not in ("", "json"):
            raise TwilioError(404, 20404, f"The requested resource {current_request.path} was not found")
        if ext == "json":
            return Response(
                _encoder.encode(_resource(record, media)), status=200, content_type="application/json"
            )
        actor = gateway.supervisor.actor(record.to_number)
        if actor is None:
            raise TwilioError(404, 20404, "The number that received this media is no longer configured")
        try:
            with trio.fail_after(FETCH_TIMEOUT):
                resp = await actor.api_get(b"/v1/media/" + media.channel_media_id.encode())
        except trio.TooSlowError as exc:
            raise TwilioError(504, 20504, "WhatsApp did not return the media in time") from exc
        except TransportError as exc:
            log.warning("media.fetch_failed", number=record.to_number, sid=sid, error=str(exc))
            raise TwilioError(502, 20500, "The media could not be fetched from WhatsApp") from exc
        if resp.status == 404:
            raise TwilioError(404, 20404, "WhatsApp no longer holds this media")
        if resp.status != 200 or len(resp.body) > MAX_MEDIA:
            log.warning("media.fetch_failed", number=record.to_number, sid=sid, status=resp.status)
            raise TwilioError(502, 20500, f"WhatsApp answered HTTP {resp.status} for this media")
        return Response(bytes(resp.body), status=200, content_type=media.content_type)
