"""Twilio's Content API (``https://content.twilio.com/v1``) served by the daemon, for its accounts.

- ``POST   /v1/Content`` (JSON ``friendly_name``, ``language``, ``variables``, ``types``) -> 201;
- ``GET    /v1/Content`` (``PageSize``, ``Page``, ``PageToken``) -> ``{"contents": [...], "meta"}``;
- ``GET    /v1/Content/{sid}``, ``DELETE /v1/Content/{sid}`` (204);
- ``POST   /v1/Content/{sid}/ApprovalRequests/whatsapp`` (JSON ``name``, ``category``,
  ``allow_category_change``; ours: ``waba``) -> 201, the template submitted to Meta;
- ``GET    /v1/Content/{sid}/ApprovalRequests`` -> ``{"sid", "account_sid", "url", "whatsapp"}``;
- ``GET    /v1/ContentAndApprovals`` -> each Content with its ``approval_requests``.

The account is the one the HTTP Basic credentials act for (auth token or API key), as on
Twilio, where the Content API has no account in its paths. Shapes follow twilio-python's
``content/v1`` (so ``client.content.v1`` works pointed here); links and page URLs point at
this daemon. Errors are Twilio's JSON: 400 (20001) for a Content or approval request we
cannot take (the message says why, Meta's own words when Meta refused it), 404 (20404).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.channels.graph import GraphError
from dispatcher.core import jsondecode
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.auth import Authenticator
from dispatcher.messages.content import (
    ApprovalRequest,
    ContentLibrary,
    ContentView,
    NewContent,
    approval_status,
)
from dispatcher.messages.content_types import ContentError

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()
_new: Final = msgspec.json.Decoder(NewContent)
_approval: Final = msgspec.json.Decoder(ApprovalRequest)
MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 50


def _not_found(sid: str) -> str:
    return f"The requested resource /Content/{sid[:40]} was not found"


def _json(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _base() -> str:
    return request.host_url.rstrip("/") + "/v1"


def _resource(view: ContentView) -> dict[str, Any]:
    url = f"{_base()}/Content/{view.sid}"
    return {
        "sid": view.sid,
        "account_sid": view.account_sid,
        "friendly_name": view.friendly_name,
        "language": view.language,
        "variables": view.variables,
        "types": view.types,
        "url": url,
        "date_created": _iso(view.date_created),
        "date_updated": _iso(view.date_updated),
        "links": {
            "approval_create": f"{url}/ApprovalRequests/whatsapp",
            "approval_fetch": f"{url}/ApprovalRequests",
        },
    }


def _whatsapp(view: ContentView) -> dict[str, Any]:
    """The ``whatsapp`` approval object: Twilio's fields, the status as Meta has it now."""
    template, approval = view.template, view.approval
    reason = ""
    if template is not None and template.status in ("REJECTED", "PAUSED", "DISABLED"):
        reason = template.status_reason or template.rejected_reason or ""
    return {
        "type": "whatsapp",
        "name": approval.name if approval is not None else (template.name if template is not None else ""),
        "category": approval.category if approval is not None else (template.category if template else ""),
        "content_type": approval.content_type if approval is not None else next(iter(view.types), ""),
        "status": approval_status(view),
        "rejection_reason": reason,
        "allow_category_change": approval.allow_category_change if approval is not None else True,
        "flows": None,
    }


def register_content_routes(app: QuartTrio, *, auth: Authenticator, library: ContentLibrary) -> None:
    def account() -> str:
        return auth.account_for(request.headers.get("Authorization"))

    def found(account_sid: str, sid: str) -> ContentView:
        view = library.get(account_sid, sid)
        if view is None:
            raise TwilioError(404, 20404, f"The requested resource /Content/{sid[:40]} was not found")
        return view

    async def decoded(decoder: msgspec.json.Decoder[Any]) -> Any:
        body: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
        try:
            return jsondecode.decode(decoder, body)
        except msgspec.DecodeError as exc:
            raise TwilioError(400, 20001, f"Invalid JSON body: {exc}") from None

    @app.post("/v1/Content")
    async def create_content() -> Response:
        account_sid = account()
        new: NewContent = await decoded(_new)
        try:
            view = await library.create(account_sid, new)
        except ContentError as exc:
            raise TwilioError(400, 20001, f"Invalid Content: {exc}") from None
        log.info("content.created", sid=view.sid, account=account_sid, types=sorted(view.types))
        return _json(_resource(view), 201)

    @app.get("/v1/Content")
    async def list_content() -> Response:
        account_sid = account()
        views = library.contents(account_sid)
        return _json(_page(views, "contents", "/Content", _resource))

    @app.get("/v1/ContentAndApprovals")
    async def list_content_and_approvals() -> Response:
        account_sid = account()

        def with_approvals(view: ContentView) -> dict[str, Any]:
            return {**_resource(view), "approval_requests": _whatsapp(view)}

        return _json(_page(library.contents(account_sid), "contents", "/ContentAndApprovals", with_approvals))

    @app.get("/v1/Content/<sid>")
    async def fetch_content(sid: str) -> Response:
        return _json(_resource(found(account(), sid)))

    @app.delete("/v1/Content/<sid>")
    async def delete_content(sid: str) -> Response:
        account_sid = account()
        if not await library.delete(account_sid, sid):
            found(account_sid, sid)  # a synced template: 404 unless it exists
            raise TwilioError(
                400,
                20001,
                f"{sid} is a WhatsApp template synced from Meta: delete it there (templates delete)",
            )
        return Response(b"", status=204)

    @app.post("/v1/Content/<sid>/ApprovalRequests/whatsapp")
    async def submit_for_approval(sid: str) -> Response:
        account_sid = account()
        found(account_sid, sid)
        asked: ApprovalRequest = await decoded(_approval)
        try:
            view = await library.submit(account_sid, sid, asked)
        except KeyError:
            raise TwilioError(
                404, 20404, f"The requested resource /Content/{sid[:40]} was not found"
            ) from None
        except ContentError as exc:
            raise TwilioError(400, 20001, f"Cannot submit {sid} for WhatsApp approval: {exc}") from None
        except GraphError as exc:
            log.warning(
                "content.submit_refused", sid=sid, code=exc.code, subcode=exc.subcode, error=exc.reason
            )
            raise TwilioError(400, 20001, f"WhatsApp refused the template: {exc.reason}") from None
        whatsapp = _whatsapp(view)
        whatsapp.pop("type")
        whatsapp.pop("flows")
        return _json(whatsapp, 201)

    @app.get("/v1/Content/<sid>/ApprovalRequests")
    async def fetch_approvals(sid: str) -> Response:
        view = found(account(), sid)
        return _json(
            {
                "sid": view.sid,
                "account_sid": view.account_sid,
                "url": f"{_base()}/Content/{sid}/ApprovalRequests",
                "whatsapp": _whatsapp(view),
            }
        )


def _page(views: list[ContentView], key: str, path: str, render: Any) -> dict[str, Any]:
    """Twilio's page: ``PageSize`` (1..1000, default 50), ``Page`` and its ``PageToken``."""
    try:
        size = int(request.args.get("PageSize", DEFAULT_PAGE))
        page = int(request.args.get("Page", 0))
    except ValueError:
        raise TwilioError(400, 20001, "PageSize and Page must be whole numbers") from None
    if not 1 <= size <= MAX_PAGE or page < 0:
        raise TwilioError(400, 20001, f"PageSize must be 1 to {MAX_PAGE} and Page 0 or more")
    start = page * size
    chunk = views[start : start + size]
    url = f"{_base()}{path}"

    def link(n: int) -> str:
        return f"{url}?PageSize={size}&Page={n}&PageToken=PT{n * size}"

    return {
        key: [render(v) for v in chunk],
        "meta": {
            "page": page,
            "page_size": size,
            "first_page_url": f"{url}?PageSize={size}&Page=0",
            "previous_page_url": link(page - 1) if page > 0 else None,
            "url": link(page),
            "next_page_url": link(page + 1) if start + size < len(views) else None,
            "key": key,
        },
    }
