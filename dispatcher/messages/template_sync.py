"""Keeping each WABA's templates in sync with Meta: a full pull on a timer, the webhooks in between.

``run`` pulls every ``[[wabas]]``'s templates at start and then every ``sync_interval``
(or at once when ``request`` asks: an operator's ``templates sync``, a webhook about a
template we have never seen). A failed pull is logged with Meta's error and tried again
at the next turn; the catalog keeps what it knew.

The three template webhooks (reference §1.5) move single templates on between pulls:
``message_template_status_update`` (approved, rejected, paused, disabled...),
``message_template_quality_update`` and ``template_category_update``. Meta's own example
of the quality update is labelled as a status update, so a status update that carries
``new_quality_score`` is read as a quality update (pywa routes it the same way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Final, final

import attrs
import msgspec
import structlog
import trio

from dispatcher.channels.cloud_webhook import FieldChange
from dispatcher.channels.graph import GraphError
from dispatcher.channels.graph_templates import GraphTemplates, NewTemplate
from dispatcher.core import jsondecode
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.wa_template import WaTemplate, normalize_language, stable_sid
from dispatcher.messages.catalog import SyncResult, TemplateCatalog

log = structlog.get_logger()

# Events whose status we cannot tell from the event alone: the template is pulled again.
_RESYNC_EVENTS: Final = frozenset({"UNARCHIVED", "UNLOCKED"})
_EVENT_STATUS: Final = {"REINSTATED": "APPROVED"}


class _Info(msgspec.Struct):
    title: str | None = None
    description: str | None = None
    reason: str | None = None


class _TemplateRef(msgspec.Struct, kw_only=True):
    message_template_id: int | str = ""
    message_template_name: str = ""
    message_template_language: str = ""

    def ref(self) -> tuple[str, str, str]:
        language = normalize_language(self.message_template_language)
        return str(self.message_template_id), self.message_template_name, language


class _StatusUpdate(_TemplateRef, kw_only=True):
    event: str
    reason: str | None = None
    message_template_category: str | None = None
    other_info: _Info | None = None
    rejection_info: _Info | None = None
    new_quality_score: str | None = None  # Meta's mislabelled quality example


class _QualityUpdate(_TemplateRef, kw_only=True):
    new_quality_score: str
    previous_quality_score: str | None = None


class _CategoryUpdate(_TemplateRef, kw_only=True):
    new_category: str
    previous_category: str | None = None
    correct_category: str | None = None
    category_update_timestamp: int | None = None


_status: Final = msgspec.json.Decoder(_StatusUpdate)
_quality: Final = msgspec.json.Decoder(_QualityUpdate)
_category: Final = msgspec.json.Decoder(_CategoryUpdate)


@attrs.frozen
class WabaSync:
    """How one WABA is kept in sync: its Graph API and how often it is pulled whole."""

    graph: GraphTemplates
    interval: float
    app_id: str | None = None  # the Meta app, for uploads of header media examples


@final
class TemplateSync:
    def __init__(self, *, catalog: TemplateCatalog, wabas: Mapping[str, WabaSync], wall: WallClock) -> None:
        self._catalog = catalog
        self._wabas = dict(wabas)
        self._wall = wall
        self._asked: dict[str, trio.Event] = {waba: trio.Event() for waba in self._wabas}
        self.failures: dict[str, str] = {}  # WABA -> the last pull's error, until one succeeds
        self.last_synced: dict[str, float] = {}

    def wabas(self) -> list[str]:
        return sorted(self._wabas)

    def graph(self, waba: str) -> GraphTemplates:
        """Raises KeyError for a WABA not in ``[[wabas]]``."""
        return self._wabas[waba].graph

    def app_id(self, waba: str) -> str | None:
        return self._wabas[waba].app_id

    async def upload(self, waba: str, data: bytes, file_type: str, file_name: str) -> str:
        """A header media example uploaded through the WABA's Meta app: its handle.

        Raises:
            KeyError: not a configured WABA; ValueError: it has no ``app_id``; GraphError: Meta refused.
        """
        chosen = self._wabas[waba]
        if chosen.app_id is None:
            raise ValueError(f"WABA {waba} has no app_id: header media examples are uploaded through the app")
        return await chosen.graph.upload(chosen.app_id, data, file_type, file_name)

    # -- pulls ----------------------------------------------------------------------

    async def sync(self, waba: str) -> SyncResult:
        """Pull every page of ``waba``'s templates now and apply them.

        Raises:
            KeyError: not a configured WABA.
            GraphError: Meta refused or did not answer; the catalog is unchanged.
        """
        graph = self._wabas[waba].graph
        seen_at = self._wall.now()
        try:
            listed = await graph.list_all()
        except GraphError as exc:
            self.failures[waba] = exc.reason
            log.warning(
                "templates.sync_failed", waba=waba, status=exc.status, code=exc.code, error=exc.reason
            )
            raise
        result = await self._catalog.apply_sync(waba, listed, seen_at=seen_at)
        self.failures.pop(waba, None)
        self.last_synced[waba] = seen_at
        log.info(
            "templates.synced",
            waba=waba,
            fetched=result.fetched,
            added=len(result.added),
            changed=len(result.changed),
            removed=len(result.removed),
        )
        return result

    def request(self, waba: str) -> None:
        """Pull ``waba`` again soon (its loop wakes)."""
        asked = self._asked.get(waba)
        if asked is not None:
            asked.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One loop per WABA until cancelled: a pull at once, then every interval or when asked."""
        async with trio.open_nursery() as nursery:
            for waba in self._wabas:
                nursery.start_soon(self._keep_in_sync, waba)
            task_status.started()

    async def _keep_in_sync(self, waba: str) -> None:
        interval = self._wabas[waba].interval
        while True:
            self._asked[waba] = trio.Event()
            with contextlib.suppress(GraphError):  # logged; the next turn tries again
                await self.sync(waba)
            with trio.move_on_after(interval):
                await self._asked[waba].wait()

    # -- webhooks -----------------------------------------------------------------------

    async def on_status_update(self, info: NumberInfo, change: FieldChange) -> None:
        """``message_template_status_update``: the template's new status (and why)."""
        if not self._known(info, change):
            return
        update = jsondecode.decode(_status, change.value)
        if update.new_quality_score is not None:
            await self._quality(info, change, update.ref(), update.new_quality_score)
            return
        event = update.event.upper()
        if event in _RESYNC_EVENTS:
            self.request(change.waba_id)
            return
        status = _EVENT_STATUS.get(event, event)
        why = _reason(update)
        changes: dict[str, object] = {"status": status, "status_reason": why}
        if status == "REJECTED":
            changes["rejected_reason"] = update.reason if update.reason not in (None, "NONE") else None
        if update.message_template_category:
            changes["category"] = update.message_template_category.upper()
        await self._apply(info, change, update.ref(), "templates.status", **changes)

    async def on_quality_update(self, info: NumberInfo, change: FieldChange) -> None:
        """``message_template_quality_update``: GREEN, YELLOW, RED or UNKNOWN."""
        if not self._known(info, change):
            return
        update = jsondecode.decode(_quality, change.value)
        await self._quality(info, change, update.ref(), update.new_quality_score)

    async def on_category_update(self, info: NumberInfo, change: FieldChange) -> None:
        """``template_category_update``: a category changed (or will, with ``correct_category``)."""
        if not self._known(info, change):
            return
        update = jsondecode.decode(_category, change.value)
        if update.correct_category is not None and update.previous_category is None:
            # Announced for later (within 24 h): logged now, applied when Meta says it is done.
            log.info(
                "templates.category_change_announced",
                number=info.number,
                waba=change.waba_id,
                name=update.message_template_name,
                category=update.new_category,
                correct_category=update.correct_category,
                at=update.category_update_timestamp,
            )
            return
        await self._apply(
            info,
            change,
            update.ref(),
            "templates.category",
            category=update.new_category.upper(),
            previous_category=update.previous_category,
        )

    async def _quality(
        self, info: NumberInfo, change: FieldChange, ref: tuple[str, str, str], score: str
    ) -> None:
        await self._apply(info, change, ref, "templates.quality", quality=score.upper())

    def _known(self, info: NumberInfo, change: FieldChange) -> bool:
        if change.waba_id in self._wabas:
            return True
        log.warning(
            "templates.unknown_waba", number=info.number, waba=change.waba_id[:40], field=change.field
        )
        return False

    async def _apply(
        self, info: NumberInfo, change: FieldChange, ref: tuple[str, str, str], event: str, **changes: object
    ) -> None:
        at = change.time or self._wall.now()
        updated = await self._catalog.update(change.waba_id, ref, at, **changes)
        if updated is None:
            log.info(
                "templates.unseen", number=info.number, waba=change.waba_id, name=ref[1], language=ref[2]
            )
            self.request(change.waba_id)  # made elsewhere (Business Manager): pull it
            return
        log.info(
            event, number=info.number, waba=change.waba_id, sid=updated.sid, name=updated.name, **changes
        )

    # -- authoring --------------------------------------------------------------------

    async def submit(
        self,
        waba: str,
        template: NewTemplate,
        *,
        sid: str | None = None,
        keymap: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
        fixed: Mapping[str, str] | None = None,
    ) -> WaTemplate:
        """Submit ``template`` to Meta for review; the catalog has it PENDING at once.

        ``sid``: the ContentSid it goes by (a Content resource's), else its stable sid.

        Raises:
            KeyError: not a configured WABA.
            GraphError: Meta refused it (its error says why).
        """
        created = await self._wabas[waba].graph.create(template)
        language = normalize_language(template.language)
        now = self._wall.now()
        stored = WaTemplate(
            sid=sid or stable_sid(waba, template.name, language),
            waba=waba,
            id=created.id,
            name=template.name,
            language=language,
            status=created.status.upper(),
            category=(created.category or template.category).upper(),
            parameter_format=(template.parameter_format or "POSITIONAL").upper(),
            components=template.components,
            changed_at=now,
            keymap=dict(keymap or {}),
            defaults=dict(defaults or {}),
            fixed=dict(fixed or {}),
        )
        stored = await self._catalog.put(stored)
        log.info(
            "templates.submitted",
            waba=waba,
            sid=stored.sid,
            name=stored.name,
            language=language,
            id=created.id,
        )
        self.request(waba)  # Meta lists it with its components as stored there
        return stored

    async def delete(self, waba: str, name: str, language: str | None = None) -> list[str]:
        """Delete ``name`` at Meta (every language, or one); returns the sids marked DELETED."""
        graph = self._wabas[waba].graph
        doomed = [t for t in self._catalog.templates([waba]) if t.name == name and t.status != "DELETED"]
        if language is not None:
            doomed = [t for t in doomed if t.language == normalize_language(language)]
        await graph.delete(name, doomed[0].id if language is not None and doomed else None)
        now = self._wall.now()
        for template in doomed:
            await self._catalog.update(
                waba, (template.id, template.name, template.language), now, status="DELETED"
            )
        log.info("templates.deleted", waba=waba, name=name, language=language, sids=[t.sid for t in doomed])
        return [t.sid for t in doomed]


def _reason(update: _StatusUpdate) -> str | None:
    for info in (update.other_info, update.rejection_info):
        if info is not None and (info.title or info.reason):
            return info.title or info.reason
    return update.reason if update.reason not in (None, "NONE") else None
