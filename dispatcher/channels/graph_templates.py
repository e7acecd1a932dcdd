"""Meta's Graph API for a WABA's message templates: list (every page), create, delete (reference §1.1-1.3).

A cold path (a sync every few minutes, an operator's submit), so its calls go through the
WABA's ``GraphClient`` (``channels.graph``, shared with number management): the token as a
bearer header (never in the URL, so it never lands in a log), Meta's error envelope as
``GraphError``. ``paging.next`` is followed only when it points at the same Graph host,
else the ``after`` cursor is asked for on ours, so a token is never sent elsewhere.
"""

from __future__ import annotations

from typing import Final, TypeVar, final

import msgspec

from dispatcher.channels.graph import GraphClient, GraphError
from dispatcher.core.wa_template import Component, GraphTemplate

LIST_FIELDS: Final = (
    "id,name,language,category,status,components,parameter_format,quality_score,rejected_reason,"
    "previous_category"
)
T = TypeVar("T")

PAGE_SIZE: Final = 100
MAX_PAGES: Final = 1000  # 100,000 templates: far over Meta's 6,000 per WABA


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
_encoder: Final = msgspec.json.Encoder()


@final
class GraphTemplates:
    """One WABA's templates at Meta, through the WABA's Graph client."""

    def __init__(self, *, graph: GraphClient, waba: str) -> None:
        self._graph = graph
        self.waba = waba

    async def list_all(self) -> list[GraphTemplate]:
        """Every template of the WABA, following the pages to the end.

        Raises:
            GraphError: a page was refused or unreadable (nothing is returned then: a partial
                list must not look like templates were deleted).
        """
        first = f"{self.waba}/message_templates"
        path: str = first
        params: dict[str, str] | None = {"fields": LIST_FIELDS, "limit": str(PAGE_SIZE)}
        found: list[GraphTemplate] = []
        for _ in range(MAX_PAGES):
            page = _decoded(_page, await self._graph.call_raw("GET", path, params=params), "template list")
            found.extend(page.data)
            paging = page.paging
            after = paging.cursors.after if paging is not None and paging.cursors is not None else None
            if paging is None or not paging.next or not page.data:
                return found
            if self._graph.on_host(paging.next):
                path, params = paging.next, None  # Meta's own link (it carries the fields and cursor)
            elif after:
                path, params = first, {"fields": LIST_FIELDS, "limit": str(PAGE_SIZE), "after": after}
            else:
                return found
        raise GraphError(200, f"more than {MAX_PAGES} pages of templates")

    async def get(self, template_id: str) -> GraphTemplate:
        body = await self._graph.call_raw("GET", template_id, params={"fields": LIST_FIELDS})
        return _decoded(_template, body, "template")

    async def create(self, template: NewTemplate) -> Created:
        body = await self._graph.call_raw(
            "POST",
            f"{self.waba}/message_templates",
            content=_encoder.encode(template),
            headers={"content-type": "application/json"},
        )
        return _decoded(_created, body, "answer to the create")

    async def upload(self, app_id: str, data: bytes, file_type: str, file_name: str) -> str:
        """A header example's handle: Graph's resumable upload (``POST /{app-id}/uploads``, then the
        bytes to the session at offset 0) in one go."""
        params = {"file_name": file_name, "file_length": str(len(data)), "file_type": file_type}
        body = await self._graph.call_raw("POST", f"{app_id}/uploads", params=params)
        session = _decoded(_session, body, "upload session").id
        body = await self._graph.call_raw("POST", session, content=data, headers={"file_offset": "0"})
        return _decoded(_handle, body, "upload answer").h

    async def delete(self, name: str, template_id: str | None = None) -> None:
        """Every language of ``name`` (or only the one with ``template_id``)."""
        params = {"name": name} if template_id is None else {"name": name, "hsm_id": template_id}
        await self._graph.call_raw("DELETE", f"{self.waba}/message_templates", params=params)


def _decoded(decoder: msgspec.json.Decoder[T], body: bytes, what: str) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise GraphError(200, f"unreadable {what}: {exc}") from exc
