"""What the admin API (and ``wadispatch templates``) shows of the WABAs' templates: JSON shapes."""

from __future__ import annotations

import msgspec

from dispatcher.core.wa_template import Component, WaTemplate, slots


class TemplateSummary(msgspec.Struct, kw_only=True):
    sid: str
    waba: str
    id: str
    name: str
    language: str
    status: str
    status_reason: str | None
    category: str
    parameter_format: str
    quality: str
    variables: list[str]  # the ContentVariables keys a send takes
    synced_at: float
    changed_at: float


class TemplateDetail(TemplateSummary, kw_only=True):
    components: list[Component]
    rejected_reason: str | None
    previous_category: str | None


class WabaState(msgspec.Struct, kw_only=True):
    id: str
    templates: int
    last_synced: float | None
    failure: str | None


class SyncOutcome(msgspec.Struct, kw_only=True):
    waba: str
    fetched: int = 0
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    error: str | None = None


def summary(template: WaTemplate) -> TemplateSummary:
    keys = {template.keymap.get(s.key, s.key): None for s in slots(template)}
    return TemplateSummary(
        sid=template.sid,
        waba=template.waba,
        id=template.id,
        name=template.name,
        language=template.language,
        status=template.status,
        status_reason=template.status_reason,
        category=template.category,
        parameter_format=template.parameter_format,
        quality=template.quality,
        variables=list(keys),
        synced_at=template.synced_at,
        changed_at=template.changed_at,
    )


def detail(template: WaTemplate) -> TemplateDetail:
    return TemplateDetail(
        **msgspec.structs.asdict(summary(template)),
        components=template.components,
        rejected_reason=template.rejected_reason,
        previous_category=template.previous_category,
    )
