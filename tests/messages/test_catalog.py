"""The template catalog over a real LMDB store: syncs, webhook changes in Meta's order, restarts,
and what the actors' gate is told."""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors.outcome import Failed
from dispatcher.core.store import Store
from dispatcher.core.wa_template import GraphTemplate, stable_sid
from dispatcher.messages.catalog import NOT_APPROVED, WAIT_RECHECK, TemplateCatalog
from tests.helpers.templates import WABA, corpus

T0 = 1_750_000_000.0


def graph(name: str = "pywa_seasonal_promotion", **fields: object) -> GraphTemplate:
    doc = {"id": "1689556908129835", "status": "APPROVED", **corpus(name), **fields}
    doc.pop("message_send_ttl_seconds", None)
    return msgspec.convert(doc, GraphTemplate)


async def test_a_sync_adds_changes_and_marks_what_is_gone(writer: Store) -> None:
    catalog = TemplateCatalog(writer, policies={})
    promo, coupon = graph(), graph("pywa_coupon_code_fall2023_25off", id="2")
    first = await catalog.apply_sync(WABA, [promo, coupon], seen_at=T0)
    assert (len(first.added), first.changed, first.removed) == (2, [], [])
    sid = stable_sid(WABA, "seasonal_promotion", "en_US")
    assert catalog.get(sid) is not None and catalog.find(WABA, "seasonal_promotion", "en-US") == catalog.get(
        sid
    )
    second = await catalog.apply_sync(
        WABA, [msgspec.structs.replace(promo, status="PAUSED")], seen_at=T0 + 60
    )
    assert (second.added, second.changed) == ([], [sid])
    assert second.removed == [stable_sid(WABA, "coupon_code_fall2023_25off", "en_US")]
    assert catalog.get(second.removed[0]).status == "DELETED"  # type: ignore[union-attr]
    assert catalog.get(sid).status == "PAUSED"  # type: ignore[union-attr]
    # The same list again: nothing changes.
    third = await catalog.apply_sync(
        WABA, [msgspec.structs.replace(promo, status="PAUSED")], seen_at=T0 + 120
    )
    assert (third.added, third.changed, third.removed) == ([], [], [])


async def test_webhooks_apply_in_metas_order_and_a_sync_does_not_undo_a_newer_one(writer: Store) -> None:
    catalog = TemplateCatalog(writer, policies={})
    await catalog.apply_sync(WABA, [graph()], seen_at=T0)
    ref = ("1689556908129835", "seasonal_promotion", "en_US")
    paused = await catalog.update(WABA, ref, T0 + 10, status="PAUSED", status_reason="FIRST_PAUSE")
    assert paused is not None and paused.status == "PAUSED"
    # A redelivered older webhook changes nothing.
    kept = await catalog.update(WABA, ref, T0 + 5, status="APPROVED")
    assert kept is not None and kept.status == "PAUSED"
    # A sync that started before the pause (its list still APPROVED) keeps the webhook's pause.
    await catalog.apply_sync(WABA, [graph()], seen_at=T0 + 10.5)
    assert catalog.get(paused.sid).status == "PAUSED"  # type: ignore[union-attr]
    # One listed well after it shows Meta's state.
    await catalog.apply_sync(WABA, [graph()], seen_at=T0 + 100)
    assert catalog.get(paused.sid).status == "APPROVED"  # type: ignore[union-attr]
    # Unknown to the catalog: None (the sync service pulls the WABA then).
    assert await catalog.update(WABA, ("9", "never_seen", "en_US"), T0 + 200, status="APPROVED") is None


async def test_the_catalog_survives_a_restart(store_path: Path, writer: Store) -> None:
    catalog = TemplateCatalog(writer, policies={})
    await catalog.apply_sync(WABA, [graph()], seen_at=T0)
    sid = stable_sid(WABA, "seasonal_promotion", "en_US")
    await catalog.update(WABA, ("1689556908129835", "", ""), T0 + 10, quality="RED")
    again = TemplateCatalog(writer, policies={})
    assert again.get(sid) == catalog.get(sid)
    assert again.get(sid).quality == "RED"  # type: ignore[union-attr]


async def test_the_gate_sends_approved_waits_for_a_pause_or_fails_per_policy(writer: Store) -> None:
    waiting = TemplateCatalog(writer, policies={WABA: "wait"})
    await waiting.apply_sync(WABA, [graph(status="PAUSED")], seen_at=T0)
    sid = stable_sid(WABA, "seasonal_promotion", "en_US")
    assert waiting.verdict(sid) == WAIT_RECHECK
    assert waiting.verdict("HX" + "0" * 32) is None  # not a synced template: Meta judges it
    failing = TemplateCatalog(writer, policies={WABA: "fail"})
    verdict = failing.verdict(sid)
    assert isinstance(verdict, Failed) and verdict.error_code == NOT_APPROVED
    assert "paused by Meta" in verdict.error_message
    await failing.apply_sync(WABA, [graph(status="DISABLED")], seen_at=T0 + 100)
    assert isinstance(waiting.verdict(sid), float)  # its own copy: still the paused state it read
    disabled = TemplateCatalog(writer, policies={WABA: "wait"})
    assert isinstance(disabled.verdict(sid), Failed)  # disabled never comes back: fails even when waiting
    await disabled.apply_sync(WABA, [graph()], seen_at=T0 + 200)
    assert disabled.verdict(sid) is None
