"""Admin routes of the templates: the file / admin registry (``GET/POST /admin/v1/templates``), and the
WABAs' templates synced from Meta (``/admin/v1/wabas``: sync, list, show, submit, delete).

The admin guard (``frontdoor/admin.py``) already requires the admin bearer
token on every ``/admin/`` path; these routes only translate. Shapes are the
ones documented in ``dispatcher/messages/templates.py``; errors are the admin API's
JSON errors (``code``, ``message``, ``more_info``, ``status``): 400 with 20001
for an invalid template, 409 with 20001 for a sid that exists.
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

import attrs
import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.channels.graph import GraphError
from dispatcher.channels.graph_templates import NewTemplate as NewGraphTemplate
from dispatcher.core import jsondecode
from dispatcher.core.template_file import NewTemplate, TemplateError
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.admin import PREFIX
from dispatcher.messages.catalog import TemplateCatalog
from dispatcher.messages.template_sync import TemplateSync
from dispatcher.messages.template_views import SyncOutcome, WabaState, detail, summary
from dispatcher.messages.templates import TemplateExistsError, TemplateList, TemplateRegistry

log = structlog.get_logger()

T = TypeVar("T")

_ACCOUNT: Final = re.compile(r"^AC[0-9a-fA-F]{32}$")
_new_decoder: Final = msgspec.json.Decoder(NewTemplate)
_encoder: Final = msgspec.json.Encoder()


def _json(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


async def _decoded_body(decoder: msgspec.json.Decoder[T]) -> T:
    """The request's JSON body as ``decoder`` reads it; 400 (20001) saying what is wrong."""
    body: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
    try:
        return jsondecode.decode(decoder, body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TwilioError(400, 20001, f"Invalid template: {exc}") from None


def register_template_routes(app: QuartTrio, registry: TemplateRegistry) -> None:
    @app.get(f"{PREFIX}/templates")
    async def list_templates() -> Response:
        account = request.args.get("account")
        if account is not None and not _ACCOUNT.match(account):
            raise TwilioError(400, 20001, "account: expected an account sid (AC + 32 hex digits)")
        return _json(TemplateList(registry.list(account)))

    @app.post(f"{PREFIX}/templates")
    async def add_template() -> Response:
        new = await _decoded_body(_new_decoder)
        try:
            template = await registry.add(new)
        except TemplateExistsError as exc:
            raise TwilioError(409, 20001, str(exc)) from None
        except TemplateError as exc:
            raise TwilioError(400, 20001, f"Invalid template: {exc}") from None
        log.info("admin.template_added", sid=template.sid, account=template.account, name=template.name)
        return _json(template, 201)


# -- the WABAs' templates, synced from Meta ------------------------------------------------


@attrs.frozen
class WabaTemplates:
    """What the admin routes of the WABAs' templates serve from: the catalog and its sync."""

    catalog: TemplateCatalog
    sync: TemplateSync


_graph_template: Final = msgspec.json.Decoder(NewGraphTemplate)
_WABA: Final = re.compile(r"^[0-9]{1,32}$")


def register_waba_template_routes(app: QuartTrio, wabas: WabaTemplates) -> None:
    """``/admin/v1/wabas``: each WABA's sync state; its templates listed, shown, submitted, deleted."""
    catalog, sync = wabas.catalog, wabas.sync

    def known(waba: str) -> str:
        if waba not in sync.wabas():
            raise TwilioError(404, 20404, f"No WABA {waba[:40]} in [[wabas]]")
        return waba

    @app.get(f"{PREFIX}/wabas")
    async def list_wabas() -> Response:
        states = [
            WabaState(
                id=w,
                templates=len(catalog.templates([w])),
                last_synced=sync.last_synced.get(w),
                failure=sync.failures.get(w),
            )
            for w in sync.wabas()
        ]
        return _json({"wabas": states})

    @app.get(f"{PREFIX}/wabas/templates")
    async def list_waba_templates() -> Response:
        waba = request.args.get("waba")
        status = request.args.get("status")
        found = catalog.templates(None if waba is None else [known(waba)])
        if status is not None:
            found = [t for t in found if t.status == status.upper()]
        return _json({"templates": [summary(t) for t in found]})

    @app.get(f"{PREFIX}/wabas/templates/<ref>")
    async def show_waba_template(ref: str) -> Response:
        template = catalog.get(ref)
        if template is None:
            language = request.args.get("language")
            matches = [
                t
                for t in catalog.templates(sync.wabas())
                if t.name == ref and (language is None or t.language == language)
            ]
            if len(matches) > 1:
                languages = ", ".join(f"{t.language} ({t.waba})" for t in matches)
                raise TwilioError(400, 20001, f"{ref} exists in several languages or WABAs: {languages}")
            template = matches[0] if matches else None
        if template is None:
            raise TwilioError(404, 20404, f"No template {ref[:64]}")
        return _json(detail(template))

    @app.post(f"{PREFIX}/wabas/sync")
    async def sync_wabas() -> Response:
        asked = request.args.get("waba")
        outcomes: list[SyncOutcome] = []
        for waba in [known(asked)] if asked is not None else sync.wabas():
            try:
                result = await sync.sync(waba)
            except GraphError as exc:
                outcomes.append(SyncOutcome(waba=waba, error=exc.reason))
                continue
            outcomes.append(
                SyncOutcome(
                    waba=waba,
                    fetched=result.fetched,
                    added=result.added,
                    changed=result.changed,
                    removed=result.removed,
                )
            )
        return _json({"synced": outcomes})

    @app.post(f"{PREFIX}/wabas/<waba>/templates")
    async def submit_waba_template(waba: str) -> Response:
        known(waba)
        new = await _decoded_body(_graph_template)
        try:
            stored = await sync.submit(waba, new)
        except GraphError as exc:
            raise TwilioError(400, 20001, f"WhatsApp refused the template: {exc.reason}") from None
        log.info("admin.template_submitted", waba=waba, sid=stored.sid, name=stored.name)
        return _json(detail(stored), 201)

    @app.delete(f"{PREFIX}/wabas/<waba>/templates/<name>")
    async def delete_waba_template(waba: str, name: str) -> Response:
        known(waba)
        try:
            deleted = await sync.delete(waba, name, request.args.get("language"))
        except GraphError as exc:
            raise TwilioError(400, 20001, f"WhatsApp refused the delete: {exc.reason}") from None
        log.info("admin.template_deleted", waba=waba, name=name, sids=deleted)
        return _json({"deleted": deleted})
