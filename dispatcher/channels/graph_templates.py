"""Meta's Graph API for a WABA's message templates: list (every page), create, delete (reference §1.1-1.3).

A cold path (a sync every few minutes, an operator's submit), so it goes through an
``httpx.AsyncClient`` the daemon owns. Every call carries the WABA's token as a bearer
header (never in the URL, so it never lands in a log); ``paging.next`` is followed only
when it points at the same Graph host, else the ``after`` cursor is asked for on ours, so
a token is never sent elsewhere. Graph's error envelope becomes ``GraphError`` with
Meta's code, subcode and the user-facing message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, final

import httpx
import msgspec

from dispatcher.core.wa_template import Component, GraphTemplate

LIST_FIELDS: Final = (
    "id,name,language,category,status,components,parameter_format,quality_score,rejected_reason,"
    "previous_category"
)
PAGE_SIZE: Final = 100
MAX_PAGES: Final = 1000  # 100,000 templates: far over Meta's 6,000 per WABA


class GraphError(Exception):
    """Graph answered an error (or nothing usable); ``code``/``subcode`` are Meta's, 0 if none."""

    def __init__(self, status: int, code: int, message: str, *, subcode: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.subcode = subcode
        self.message = message


class _ErrorData(msgspec.Struct):
    details: str = ""


class _Error(msgspec.Struct):
    message: str = ""
    error_data: _ErrorData | None = None
    code: int = 0
    error_subcode: int | None = None
    error_user_title: str | None = None
    error_user_msg: str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _Error


class _Cursors(msgspec.Struct):
    before: str | None = None
    after: str | None = None


class _Paging(msgspec.Struct):
    cursors: _Cursors | None = None
    next: str | None = None


class _Page(msgspec.Struct):
    data: list[GraphTemplate]
    paging: _Paging | None = None


class Created(msgspec.Struct):
    """``POST /{waba}/message_templates``'s answer."""

    id: str
    status: str = "PENDING"
    category: str = ""


class NewTemplate(msgspec.Struct, omit_defaults=True):
    """A template to submit, as Graph takes it."""

    name: str
    language: str
    category: str
    components: list[Component]
    parameter_format: str | None = None
    message_send_ttl_seconds: int | None = None
    allow_category_change: bool | None = None


class _Session(msgspec.Struct):
    id: str


class _Handle(msgspec.Struct):
    h: str


_page: Final = msgspec.json.Decoder(_Page)
_session: Final = msgspec.json.Decoder(_Session)
_handle: Final = msgspec.json.Decoder(_Handle)
_template: Final = msgspec.json.Decoder(GraphTemplate)
_created: Final = msgspec.json.Decoder(Created)
_error: Final = msgspec.json.Decoder(_ErrorEnvelope)
_encoder: Final = msgspec.json.Encoder()


@final
class GraphTemplates:
    """One WABA's templates at Meta. ``token`` is read at each call (a rotated file is picked up)."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        base_url: str,
        version: str,
        waba: str,
        token: Callable[[], str],
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._version = version
        self.waba = waba
        self._token = token

    def _url(self, path: str) -> str:
        return f"{self._base}/{self._version}/{path}"

    async def list_all(self) -> list[GraphTemplate]:
        """Every template of the WABA, following the pages to the end.

        Raises:
            GraphError: a page was refused or unreadable (nothing is returned then: a partial
                list must not look like templates were deleted).
        """
        url: str = self._url(f"{self.waba}/message_templates")
        params: dict[str, str] | None = {"fields": LIST_FIELDS, "limit": str(PAGE_SIZE)}
        found: list[GraphTemplate] = []
        for _ in range(MAX_PAGES):
            body = await self._call("GET", url, params=params)
            try:
                page = _page.decode(body)
            except msgspec.DecodeError as exc:
                raise GraphError(200, 0, f"unreadable template list: {exc}") from exc
            found.extend(page.data)
            paging = page.paging
            after = paging.cursors.after if paging is not None and paging.cursors is not None else None
            if paging is None or not paging.next or not page.data:
                return found
            if paging.next.startswith(self._base + "/"):
                url, params = paging.next, None  # Meta's own link (it carries the fields and cursor)
            elif after:
                params = {"fields": LIST_FIELDS, "limit": str(PAGE_SIZE), "after": after}
            else:
                return found
        raise GraphError(200, 0, f"more than {MAX_PAGES} pages of templates")

    async def get(self, template_id: str) -> GraphTemplate:
        body = await self._call("GET", self._url(template_id), params={"fields": LIST_FIELDS})
        try:
            return _template.decode(body)
        except msgspec.DecodeError as exc:
            raise GraphError(200, 0, f"unreadable template: {exc}") from exc

    async def create(self, template: NewTemplate) -> Created:
        body = await self._call(
            "POST", self._url(f"{self.waba}/message_templates"), content=_encoder.encode(template)
        )
        try:
            return _created.decode(body)
        except msgspec.DecodeError as exc:
            raise GraphError(200, 0, f"unreadable answer to the create: {exc}") from exc

    async def upload(self, app_id: str, data: bytes, file_type: str, file_name: str) -> str:
        """A header example's handle: Graph's resumable upload (``POST /{app-id}/uploads``, then the
        bytes to the session at offset 0) in one go."""
        params = {"file_name": file_name, "file_length": str(len(data)), "file_type": file_type}
        body = await self._call("POST", self._url(f"{app_id}/uploads"), params=params)
        try:
            session = _session.decode(body).id
        except msgspec.DecodeError as exc:
            raise GraphError(200, 0, f"unreadable upload session: {exc}") from exc
        body = await self._call("POST", self._url(session), content=data, headers={"file_offset": "0"})
        try:
            return _handle.decode(body).h
        except msgspec.DecodeError as exc:
            raise GraphError(200, 0, f"unreadable upload answer: {exc}") from exc

    async def delete(self, name: str, template_id: str | None = None) -> None:
        """Every language of ``name`` (or only the one with ``template_id``)."""
        params = {"name": name} if template_id is None else {"name": name, "hsm_id": template_id}
        await self._call("DELETE", self._url(f"{self.waba}/message_templates"), params=params)

    async def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        sent = {"Authorization": f"Bearer {self._token()}"}
        if headers is not None:
            sent.update(headers)  # an upload's file_offset: raw bytes, no JSON
        elif content is not None:
            sent["Content-Type"] = "application/json"
        try:
            resp = await self._client.request(method, url, params=params, content=content, headers=sent)
        except httpx.HTTPError as exc:
            raise GraphError(0, 0, f"Graph API unreachable: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise _graph_error(resp)
        return resp.content


def _graph_error(resp: httpx.Response) -> GraphError:
    try:
        error = _error.decode(resp.content).error
    except msgspec.DecodeError:
        text = resp.text.strip()[:300] or resp.reason_phrase
        return GraphError(resp.status_code, 0, f"HTTP {resp.status_code}: {text}")
    detail = error.error_user_msg or error.message or f"Graph error {error.code}"
    if error.error_user_title and error.error_user_msg:
        detail = f"{error.error_user_title}: {error.error_user_msg}"
    elif error.error_data is not None and error.error_data.details and error.error_data.details not in detail:
        detail = f"{detail}: {error.error_data.details}"
    return GraphError(resp.status_code, error.code, detail, subcode=error.error_subcode)


def describe(exc: GraphError) -> dict[str, Any]:
    """What an operator is shown of a Graph failure."""
    out: dict[str, Any] = {"status": exc.status, "code": exc.code, "message": exc.message}
    if exc.subcode is not None:
        out["subcode"] = exc.subcode
    return out
