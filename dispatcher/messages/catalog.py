"""The catalog: every WABA's templates as last known from Meta, in LMDB and in memory.

Filled by the sync (every page of ``GET /{waba}/message_templates``) and moved on by
the template webhooks between syncs; read at create (is this ContentSid a template
the sender's WABA may send now?) and by the actors' template gate before each send
of a queued template message (``verdict``). Reads are in memory; each change is
committed (``meta``, key ``watemplate NUL sid``) before it is served, so a restart
starts from the last known state and a sync brings it up to date.

Each template keeps its ``HX`` sid for good: the one it was submitted under through
the Content API, else ``stable_sid(waba, name, language)``.

Order: a webhook carries when Meta made the change (``time``, whole seconds), a sync
when it started listing. A webhook older than what the catalog already knows (from a
later webhook or sync) changes nothing, so one Meta redelivers a day late cannot undo a
pause; a sync does not overwrite a webhook's change from less than a second before it
started (Meta's seconds cannot say which came first: the webhook is believed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal, final

import attrs
import msgspec
import structlog
import trio

from actors.outcome import Failed
from dispatcher.core.store import SEP, Store, WriteTxn
from dispatcher.core.wa_template import (
    GraphTemplate,
    WaTemplate,
    normalize_language,
    stable_sid,
    template_decoder,
    template_encoder,
)

log = structlog.get_logger()

KEY_PREFIX: Final = b"watemplate" + SEP
NOT_APPROVED: Final = 63027  # the code the channels give Meta's 132001/132015/132016 as well
TIME_RESOLUTION: Final = 1.0  # Meta's webhook times are whole seconds
WAIT_RECHECK: Final = 30.0  # seconds a send of a paused template waits before it is looked at again
PausedPolicy = Literal["wait", "fail"]


@attrs.frozen
class SyncResult:
    waba: str
    fetched: int
    added: list[str]
    changed: list[str]
    removed: list[str]


def _key(sid: str) -> bytes:
    return KEY_PREFIX + sid.encode()


@final
class TemplateCatalog:
    """Templates by sid and by (WABA, name, language). ``policies``: each WABA's ``on_paused``."""

    def __init__(
        self,
        store: Store,
        *,
        policies: Mapping[str, PausedPolicy],
        on_sendable: Callable[[], None] | None = None,
    ) -> None:
        """``on_sendable``: called when a template that was not sendable (paused) becomes sendable
        again, to wake the actors whose messages of it wait (``WAIT_RECHECK`` is only the fallback)."""
        self._store = store
        self._on_sendable = on_sendable
        self._policies = dict(policies)
        self._by_sid: dict[str, WaTemplate] = {}
        self._by_name: dict[tuple[str, str, str], str] = {}
        self._lock = trio.Lock()  # one change at a time: each is computed from the state it replaces
        for _, raw in store.scan(b"meta", KEY_PREFIX):
            self._index(template_decoder.decode(raw))

    def _index(self, template: WaTemplate) -> None:
        self._by_sid[template.sid] = template
        self._by_name[(template.waba, template.name, template.language)] = template.sid

    def set_policies(self, policies: Mapping[str, PausedPolicy]) -> None:
        """A reload's ``[[wabas]] on_paused``."""
        self._policies = dict(policies)

    # -- reads --------------------------------------------------------------------

    def get(self, sid: str) -> WaTemplate | None:
        return self._by_sid.get(sid)

    def find(self, waba: str, name: str, language: str) -> WaTemplate | None:
        sid = self._by_name.get((waba, name, normalize_language(language)))
        return None if sid is None else self._by_sid.get(sid)

    def by_meta_id(self, waba: str, template_id: str) -> WaTemplate | None:
        return next((t for t in self._by_sid.values() if t.waba == waba and t.id == template_id), None)

    def templates(self, wabas: Iterable[str] | None = None) -> list[WaTemplate]:
        """Templates of ``wabas`` (all if None), by WABA, name and language."""
        chosen = None if wabas is None else set(wabas)
        found = [t for t in self._by_sid.values() if chosen is None or t.waba in chosen]
        return sorted(found, key=lambda t: (t.waba, t.name, t.language))

    def verdict(self, sid: str) -> Failed | float | None:
        """For the actors' template gate, before a queued template message is sent: None (send it),
        a delay in seconds (its template is paused and the WABA waits), or ``Failed`` (say why)."""
        template = self._by_sid.get(sid)
        if template is None or template.sendable:
            return None  # not a synced template (a file one): Meta judges it
        policy = self._policies.get(template.waba, "wait")
        if policy == "wait" and template.status in ("PAUSED", "PENDING", "IN_APPEAL", "FLAGGED", "LOCKED"):
            return WAIT_RECHECK
        return Failed(NOT_APPROVED, not_sendable(template))

    # -- changes ------------------------------------------------------------------

    async def apply_sync(self, waba: str, listed: list[GraphTemplate], *, seen_at: float) -> SyncResult:
        """The whole list of a WABA as Meta gave it at ``seen_at``: added, changed, and what is no
        longer there marked ``DELETED``. A change known to be newer than ``seen_at`` is kept."""
        async with self._lock:
            puts: list[WaTemplate] = []
            added: list[str] = []
            changed: list[str] = []
            present: set[str] = set()
            for graph in listed:
                language = normalize_language(graph.language)
                old = self.find(waba, graph.name, language)
                new = _from_graph(waba, graph, old, seen_at)
                present.add(new.sid)
                if old is None:
                    added.append(new.sid)
                elif old.changed_at + TIME_RESOLUTION > seen_at:  # a webhook's change it may not show yet
                    continue  # a webhook told us of a later change than this list shows
                elif _differs(old, new):
                    changed.append(new.sid)
                else:
                    new = msgspec.structs.replace(old, synced_at=seen_at)
                puts.append(new)
            removed: list[str] = []
            for old in self.templates([waba]):
                if (
                    old.sid in present
                    or old.status == "DELETED"
                    or old.changed_at + TIME_RESOLUTION > seen_at
                ):
                    continue
                removed.append(old.sid)
                puts.append(msgspec.structs.replace(old, status="DELETED", synced_at=seen_at))
            await self._commit(puts)
        return SyncResult(waba, len(listed), added, changed, removed)

    async def put(self, template: WaTemplate) -> WaTemplate:
        """Store ``template`` as it is (a submission's first state); an existing one of the same
        (WABA, name, language) keeps its sid."""
        async with self._lock:
            old = self.find(template.waba, template.name, template.language)
            if old is not None and old.sid != template.sid:
                template = msgspec.structs.replace(template, sid=old.sid)
            await self._commit([template])
        return template

    async def update(
        self, waba: str, ref: tuple[str, str, str], at: float, **changes: object
    ) -> WaTemplate | None:
        """Change the template ``ref`` = (Meta id, name, language) of ``waba`` as a webhook says, unless
        a later change is known; returns it as it now is, or None if it is not in the catalog."""
        template_id, name, language = ref
        async with self._lock:
            old = self.by_meta_id(waba, template_id) if template_id else None
            if old is None:
                old = self.find(waba, name, language)
            if old is None:
                return None
            if max(old.changed_at, old.synced_at) >= at + TIME_RESOLUTION:
                log.info("templates.stale_update", waba=waba, sid=old.sid, name=old.name, at=at)
                return old
            new = msgspec.structs.replace(old, changed_at=at, **changes)
            await self._commit([new])
        return new

    async def _commit(self, templates: list[WaTemplate]) -> None:
        if not templates:
            return
        items = [(_key(t.sid), template_encoder.encode(t)) for t in templates]

        def fn(txn: WriteTxn) -> None:
            for key, raw in items:
                txn.put(b"meta", key, raw)

        await self._store.write(fn)
        opened = False
        for template in templates:
            old = self._by_sid.get(template.sid)
            opened = opened or (template.sendable and old is not None and not old.sendable)
            self._index(template)
        if opened and self._on_sendable is not None:
            self._on_sendable()  # queued messages of a paused template go now, not at their recheck


def not_sendable(template: WaTemplate) -> str:
    """Why a template cannot be sent now, in words an operator acts on."""
    reason = f" ({template.status_reason})" if template.status_reason else ""
    what = {
        "PENDING": "is waiting for Meta's review",
        "REJECTED": "was rejected by Meta",
        "PAUSED": "is paused by Meta for low quality",
        "DISABLED": "is disabled by Meta",
        "DELETED": "was deleted at Meta",
    }.get(template.status, f"is {template.status} at Meta")
    return (
        f"The WhatsApp template '{template.name}' ({template.language}) {what}{reason}: "
        "only an APPROVED template can be sent."
    )


def _from_graph(waba: str, graph: GraphTemplate, old: WaTemplate | None, seen_at: float) -> WaTemplate:
    language = normalize_language(graph.language)
    fresh = WaTemplate(
        sid=old.sid if old is not None else stable_sid(waba, graph.name, language),
        waba=waba,
        id=graph.id,
        name=graph.name,
        language=language,
        status=graph.status.upper(),
        category=graph.category.upper(),
        parameter_format=(graph.parameter_format or "POSITIONAL").upper(),
        components=graph.components,
        quality=graph.quality_score.score if graph.quality_score is not None else "UNKNOWN",
        rejected_reason=graph.rejected_reason if graph.rejected_reason not in (None, "NONE") else None,
        previous_category=graph.previous_category,
        synced_at=seen_at,
    )
    if old is None:
        return fresh
    keep_reason = old.status == fresh.status
    return msgspec.structs.replace(
        fresh,
        keymap=old.keymap,
        defaults=old.defaults,
        fixed=old.fixed,
        status_reason=old.status_reason if keep_reason else fresh.rejected_reason,
        changed_at=old.changed_at,
    )


def _differs(old: WaTemplate, new: WaTemplate) -> bool:
    fields = ("id", "status", "category", "parameter_format", "components", "quality", "rejected_reason")
    return any(getattr(old, f) != getattr(new, f) for f in fields)
