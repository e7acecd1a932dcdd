"""The Content API's resources: what an account authored (``POST /v1/Content``) and its WABAs' templates.

Authored Content is kept in LMDB (``meta``, key ``content NUL sid``) as given: Twilio's
``types`` are stored as their JSON, so a type this daemon does not read comes back
unchanged. Submitting one for WhatsApp approval (``ApprovalRequests/whatsapp``) makes it a
template of the account's WABA under the Content's own ``HX`` sid (``content_types``); from
then on the catalog holds its status, and a create with that ContentSid sends it once Meta
approves it. A template synced from Meta shows here too (its ``types`` derived from its
components), so an account lists, fetches and sends every template it has.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Final, final

import attrs
import msgspec

from dispatcher.channels.graph_templates import NewTemplate
from dispatcher.core.clock import WallClock
from dispatcher.core.store import SEP, Store, WriteTxn
from dispatcher.core.wa_template import PLACEHOLDER, Component, Example, WaTemplate, render
from dispatcher.messages import content_types
from dispatcher.messages.catalog import TemplateCatalog
from dispatcher.messages.content_types import ContentError
from dispatcher.messages.media_fetch import MediaFetcher, MediaFetchError
from dispatcher.messages.template_sync import TemplateSync

KEY_PREFIX: Final = b"content" + SEP
CATEGORIES: Final = ("UTILITY", "MARKETING", "AUTHENTICATION")


class Approval(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A Content's WhatsApp approval request, as submitted."""

    name: str
    category: str
    waba: str
    content_type: str
    allow_category_change: bool = True
    submitted_at: float = 0.0


class ContentRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    sid: str
    account_sid: str
    friendly_name: str = ""
    language: str = "en"
    variables: dict[str, str] = {}
    types_json: bytes = b"{}"  # Twilio's types as the client gave them (JSON)
    date_created: float = 0.0
    date_updated: float = 0.0
    approval: Approval | None = None


class NewContent(msgspec.Struct, kw_only=True):
    """``POST /v1/Content``'s JSON body."""

    types: dict[str, Any]
    friendly_name: str | None = None
    language: str | None = None
    variables: dict[str, str] | None = None


class ApprovalRequest(msgspec.Struct, kw_only=True):
    """``POST .../ApprovalRequests/whatsapp``: Twilio's fields, and ``waba`` (ours: which WABA, when
    the account has several)."""

    name: str
    category: str
    allow_category_change: bool | None = None
    send_ttl_seconds: int | None = None
    waba: str | None = None


@attrs.frozen
class ContentView:
    """A Content resource as the API shows it, authored or synced."""

    sid: str
    account_sid: str
    friendly_name: str
    language: str
    variables: dict[str, str]
    types: dict[str, Any]
    date_created: float
    date_updated: float
    template: WaTemplate | None  # its WhatsApp template, once submitted or when synced
    approval: Approval | None


_record: Final = msgspec.msgpack.Decoder(ContentRecord)
_encoder: Final = msgspec.msgpack.Encoder()
_json: Final = msgspec.json.Encoder()
_types: Final = msgspec.json.Decoder(dict[str, Any])


def _key(sid: str) -> bytes:
    return KEY_PREFIX + sid.encode()


@final
class ContentLibrary:
    """``wabas``: each account's WABA ids (``[[wabas]] account``)."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: TemplateCatalog,
        sync: TemplateSync,
        wabas: Mapping[str, list[str]],
        wall: WallClock,
        media: MediaFetcher | None = None,
    ) -> None:
        """``media`` fetches a ``twilio/media`` Content's file, uploaded to Meta as its header example."""
        self._media = media
        self._store = store
        self._catalog = catalog
        self._sync = sync
        self._wabas = {account: list(ids) for account, ids in wabas.items()}
        self._wall = wall

    def _load(self, sid: str) -> ContentRecord | None:
        raw = self._store.get(b"meta", _key(sid))
        return None if raw is None else _record.decode(raw)

    async def _save(self, record: ContentRecord) -> None:
        key, raw = _key(record.sid), _encoder.encode(record)

        def fn(txn: WriteTxn) -> None:
            txn.put(b"meta", key, raw)

        await self._store.write(fn)

    # -- resources ---------------------------------------------------------------------

    async def create(self, account: str, new: NewContent) -> ContentView:
        """Store a new Content resource. Raises ContentError naming what is wrong."""
        types = _without_nulls(new.types)  # twilio-python sends every field it knows, unset ones as null
        content_types.check(types)
        language = new.language or "en"
        if not 2 <= len(language) <= 16 or not language.replace("_", "").replace("-", "").isalnum():
            raise ContentError("language: a language code such as en or pt_BR")
        friendly = new.friendly_name or ""
        if len(friendly) > 256:
            raise ContentError("friendly_name: at most 256 characters")
        now = self._wall.now()
        record = ContentRecord(
            sid="HX" + secrets.token_hex(16),
            account_sid=account,
            friendly_name=friendly,
            language=language,
            variables=dict(new.variables or {}),
            types_json=_json.encode(types),
            date_created=now,
            date_updated=now,
        )
        await self._save(record)
        return self._view(record)

    def get(self, account: str, sid: str) -> ContentView | None:
        record = self._load(sid)
        if record is not None:
            return self._view(record) if record.account_sid == account else None
        template = self._catalog.get(sid)
        if (
            template is None
            or template.waba not in self._wabas.get(account, [])
            or template.status == "DELETED"
        ):
            return None
        return _synced(account, template)

    def contents(self, account: str) -> list[ContentView]:
        """Every Content of ``account``, newest first: authored, then its WABAs' other templates."""
        authored = [
            self._view(r)
            for _, raw in self._store.scan(b"meta", KEY_PREFIX)
            if (r := _record.decode(raw)).account_sid == account
        ]
        seen = {v.sid for v in authored}
        synced = [
            _synced(account, t)
            for t in self._catalog.templates(self._wabas.get(account, []))
            if t.sid not in seen and t.status != "DELETED"
        ]
        return sorted(authored, key=lambda v: -v.date_created) + synced

    async def delete(self, account: str, sid: str) -> bool:
        """Forget an authored Content (its WhatsApp template, if any, stays at Meta)."""
        record = self._load(sid)
        if record is None or record.account_sid != account:
            return False
        key = _key(sid)

        def fn(txn: WriteTxn) -> None:
            txn.delete(b"meta", key)

        await self._store.write(fn)
        return True

    # -- WhatsApp approval -------------------------------------------------------------------

    async def submit(self, account: str, sid: str, request: ApprovalRequest) -> ContentView:
        """Submit an authored Content to Meta as a template of the account's WABA.

        Raises:
            KeyError: no such Content of this account.
            ContentError: it cannot be a template (or was submitted already); GraphError: Meta refused it.
        """
        record = self._load(sid)
        if record is None or record.account_sid != account:
            raise KeyError(sid)
        if record.approval is not None:
            raise ContentError(f"Content {sid} was already submitted for WhatsApp approval")
        category = request.category.upper()
        if category not in CATEGORIES:
            raise ContentError(f"category: one of {', '.join(CATEGORIES)}")
        waba = self._waba(account, request.waba)
        submission = content_types.to_template(_types.decode(record.types_json), record.variables, category)
        components = submission.components
        if "header" in submission.fixed:
            components = await self._with_header_example(waba, components, submission.fixed["header"], record)
        template = NewTemplate(
            name=request.name,
            language=record.language,
            category=submission.category,
            components=components,
            allow_category_change=request.allow_category_change,
            message_send_ttl_seconds=request.send_ttl_seconds,
        )
        await self._sync.submit(
            waba,
            template,
            sid=sid,
            keymap=submission.keymap,
            defaults=record.variables,
            fixed=submission.fixed,
        )
        now = self._wall.now()
        record.approval = Approval(
            name=request.name,
            category=submission.category,
            waba=waba,
            content_type=submission.content_type,
            allow_category_change=True
            if request.allow_category_change is None
            else request.allow_category_change,
            submitted_at=now,
        )
        record.date_updated = now
        await self._save(record)
        return self._view(record)

    async def _with_header_example(
        self, waba: str, components: list[Component], link: str, record: ContentRecord
    ) -> list[Component]:
        """Meta reviews a media header by an example it holds: the Content's file (its variables'
        samples filled in), fetched here and uploaded through the WABA's app, as its handle."""
        sample = render(link, record.variables)
        if PLACEHOLDER.search(sample):
            raise ContentError(f"variables: give a sample for every variable of the media URL {link}")
        if self._sync.app_id(waba) is None:
            raise ContentError(
                f"twilio/media: WABA {waba} has no app_id ([[wabas]]): header examples upload through it"
            )
        if self._media is None:
            raise ContentError("twilio/media: this daemon fetches no media")
        try:
            data, kind = await self._media.fetch(sample)
        except MediaFetchError as exc:
            raise ContentError(f"twilio/media: the header example could not be fetched: {exc}") from exc
        name = sample.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "example"
        handle = await self._sync.upload(waba, data, kind, name)
        header = Component(
            type="HEADER", format=components[0].format, example=Example(header_handle=[handle])
        )
        return [header, *components[1:]]

    def _waba(self, account: str, asked: str | None) -> str:
        wabas = self._wabas.get(account, [])
        if asked is not None:
            if asked not in wabas:
                raise ContentError(f"waba: {asked} is not a WABA of this account")
            return asked
        if not wabas:
            raise ContentError("this account has no WhatsApp Business Account ([[wabas]] in the config)")
        if len(wabas) > 1:
            raise ContentError(f"this account has several WABAs ({', '.join(wabas)}): name one with waba")
        return wabas[0]

    def _view(self, record: ContentRecord) -> ContentView:
        return ContentView(
            sid=record.sid,
            account_sid=record.account_sid,
            friendly_name=record.friendly_name,
            language=record.language,
            variables=record.variables,
            types=_types.decode(record.types_json),
            date_created=record.date_created,
            date_updated=record.date_updated,
            template=self._catalog.get(record.sid) if record.approval is not None else None,
            approval=record.approval,
        )


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _synced(account: str, template: WaTemplate) -> ContentView:
    types, variables = content_types.to_types(template)
    when = template.synced_at or template.changed_at
    return ContentView(
        sid=template.sid,
        account_sid=account,
        friendly_name=template.name,
        language=template.language,
        variables=variables,
        types=types,
        date_created=when,
        date_updated=max(template.changed_at, template.synced_at),
        template=template,
        approval=None,
    )


def approval_status(view: ContentView) -> str:
    """Twilio's approval status: ``unsubmitted``, or Meta's status in lower case (``approved``...)."""
    if view.template is None:
        return "unsubmitted"
    return view.template.status.lower()
