"""A WABA's templates kept in sync with Meta and sent as they are, against the simulator's Graph API.

Templates are real shapes (tests/corpus/templates); the simulator plays Meta: it lists them in
pages, reviews them from its control API and posts Meta's template webhooks, signed, to the
daemon's Cloud webhook route; it checks every template send against the approved template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from dispatcher.frontdoor.cloud_routes import signature
from dispatcher.service.daemon import Running
from tests.helpers.daemon import CLOUD, PNID, SECRET, messages_path, running_daemon
from tests.helpers.templates import WABA, corpus, sid_of, until, waba_config

TO = "+16505551234"


def create(sid: str, variables: dict[str, str] | None = None) -> dict[str, str]:
    form = {"From": f"whatsapp:{CLOUD}", "To": f"whatsapp:{TO}", "ContentSid": sid}
    if variables is not None:
        form["ContentVariables"] = json.dumps(variables)
    return form


def sent(daemon: Running) -> list[dict[str, Any]]:
    assert daemon.simulator is not None
    return daemon.simulator.cloud.received(PNID)


async def test_sync_pulls_every_page_and_sends_each_kind_of_template(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            names = [
                "pywa_seasonal_promotion",
                "pywa_coupon_code_fall2023_25off",
                "meta_docs_order_shipped_named",
            ]
            docs = {n: corpus(n) for n in names}
            for doc in docs.values():
                sim.templates.seed(WABA, doc)
            for i in range(210):  # three pages of 100
                sim.templates.seed(WABA, {**docs["pywa_seasonal_promotion"], "name": f"filler_{i:03d}"})
            result = await daemon.template_sync.sync(WABA)
            assert result.fetched == 213 and len(result.added) == 213
            assert len(daemon.catalog.templates([WABA])) == 213
            promo = daemon.catalog.get(sid_of(docs["pywa_seasonal_promotion"]))
            assert promo is not None and (promo.status, promo.category, promo.quality) == (
                "APPROVED",
                "MARKETING",
                "GREEN",
            )

            # Header text + positional body + quick replies (payloads optional).
            variables = {
                "header.1": "Summer Sale",
                "1": "August",
                "2": "25OFF",
                "3": "25%",
                "button.0": "stop-promos",
            }
            answer = await client.post(messages_path(), data=create(promo.sid, variables))
            assert answer.status_code == 201, answer.text
            assert (
                answer.json()["body"]
                == "Shop now through August and use code 25OFF to get 25% off of all merchandise."
            )
            # Named body, image header by link, URL suffix.
            named = sid_of(docs["meta_docs_order_shipped_named"])
            variables = {
                "header": "https://cdn.example.com/box.jpg",
                "first_name": "Jessica",
                "order_id": "8601",
                "button.1": "abc123",
            }
            answer = await client.post(messages_path(), data=create(named, variables))
            assert answer.status_code == 201, answer.text
            # Copy code.
            coupon = sid_of(docs["pywa_coupon_code_fall2023_25off"])
            answer = await client.post(
                messages_path(), data=create(coupon, {"1": "25OFF", "2": "25%", "button.1": "SAVE25"})
            )
            assert answer.status_code == 201, answer.text
            await until(lambda: len(sent(daemon)) == 3)
            by_name = {m["template"]["name"]: m["template"] for m in sent(daemon)}
            assert by_name["seasonal_promotion"]["components"] == [
                {"type": "header", "parameters": [{"type": "text", "text": "Summer Sale"}]},
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "August"},
                        {"type": "text", "text": "25OFF"},
                        {"type": "text", "text": "25%"},
                    ],
                },
                {
                    "type": "button",
                    "parameters": [{"type": "payload", "payload": "stop-promos"}],
                    "sub_type": "quick_reply",
                    "index": "0",
                },
            ]
            assert by_name["order_shipped_named"]["components"] == [
                {
                    "type": "header",
                    "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/box.jpg"}}],
                },
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Jessica", "parameter_name": "first_name"},
                        {"type": "text", "text": "8601", "parameter_name": "order_id"},
                    ],
                },
                {
                    "type": "button",
                    "parameters": [{"type": "text", "text": "abc123"}],
                    "sub_type": "url",
                    "index": "1",
                },
            ]
            assert by_name["coupon_code_fall2023_25off"]["components"][-1] == {
                "type": "button",
                "parameters": [{"type": "coupon_code", "coupon_code": "SAVE25"}],
                "sub_type": "copy_code",
                "index": "1",
            }
            assert sim.cloud.counters(PNID).template_errors == 0


async def test_a_paused_template_is_refused_at_create_and_its_queued_messages_wait(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            doc = corpus("pywa_coupon_code_fall2023_25off")
            sim.templates.seed(WABA, doc)
            await daemon.template_sync.sync(WABA)
            sid = sid_of(doc)
            variables = {"1": "25OFF", "2": "25%", "button.1": "SAVE25"}
            daemon.ops.pause(CLOUD)  # hold the outbox: these are queued when Meta pauses the template
            queued = [await client.post(messages_path(), data=create(sid, variables)) for _ in range(2)]
            assert [q.status_code for q in queued] == [201, 201]
            sim.templates.review(WABA, doc["name"], "pause")  # Meta's webhook, signed, to our route
            await until(lambda: daemon.catalog.get(sid).status == "PAUSED")  # type: ignore[union-attr]
            scraped = daemon.metrics.render().decode()
            assert (
                "wadispatch_templates 1.0" in scraped and "wadispatch_templates_not_sendable 1.0" in scraped
            )
            assert "wadispatch_template_sync_failing 0.0" in scraped
            refused = await client.post(messages_path(), data=create(sid, variables))
            assert refused.status_code == 400
            assert refused.json()["code"] == 63027
            assert "paused" in refused.json()["message"] and "FIRST_PAUSE" in refused.json()["message"]
            daemon.ops.resume(CLOUD)
            await trio.sleep(0.5)
            assert sent(daemon) == []  # the queued ones wait (on_paused = "wait")
            sim.templates.review(WABA, doc["name"], "unpause")
            await until(lambda: daemon.catalog.get(sid).status == "APPROVED")  # type: ignore[union-attr]
            # Woken by the unpause, not by the gate's recheck (WAIT_RECHECK, 30 s).
            await until(lambda: len(sent(daemon)) == 2, timeout=5)
            # The simulator has them; their records say so once the actor's outcome commit lands.
            with trio.fail_after(10):
                for q in queued:
                    while not await was_sent(client, q.json()["sid"]):  # noqa: ASYNC110 - the actor's commit: nothing here to wait on
                        await trio.sleep(0.05)


async def was_sent(client: httpx.AsyncClient, sid: str) -> bool:
    return (await client.get(messages_path(sid))).json()["status"] in ("sent", "delivered", "read")


async def test_what_meta_would_refuse_is_refused_at_create_and_nothing_is_stored(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            named, promo = corpus("meta_docs_order_shipped_named"), corpus("pywa_seasonal_promotion")
            sim.templates.seed(WABA, named)
            sim.templates.seed(WABA, promo)
            sim.templates.seed(WABA, {**promo, "name": "waiting_for_review", "status": "PENDING"})
            sim.templates.seed(WABA, {**promo, "name": "turned_down", "status": "REJECTED"})
            await daemon.template_sync.sync(WABA)
            good = {
                "header": "https://cdn.example.com/a.jpg",
                "first_name": "Ana",
                "order_id": "1",
                "button.1": "x",
            }
            cases: list[tuple[str, dict[str, str] | None, int, str]] = [
                (sid_of(named), {**good, "first_name": "two\nlines"}, 21656, "newlines"),
                (sid_of(named), {**good, "first_name": "tab\there"}, 21656, "tabs"),
                (sid_of(named), {**good, "first_name": "five     spaces"}, 21656, "4 consecutive spaces"),
                (sid_of(named), {**good, "order_id": "9" * 1601}, 21658, "exceeds 1600"),
                (sid_of(named), {**good, "first_name": "a" * 1000, "order_id": "b" * 600}, 21658, "body"),
                (sid_of(named), {k: v for k, v in good.items() if k != "order_id"}, 21656, "'order_id'"),
                (sid_of(named), {**good, "1": "positional"}, 21656, "unknown variables"),
                (sid_of(named), {**good, "header": "ftp://cdn.example.com/a.jpg"}, 21620, "header media"),
                (sid_of(named), {**good, "button.1": "a b"}, 21656, "spaces"),
                (sid_of(named), {**good, "button.1": "x" * 1990}, 21658, "URL"),
                (sid_of(named), {**good, "button.0": "p" * 257}, 21658, "256"),
                (sid_of(promo), {"header.1": "h" * 50, "1": "a", "2": "b", "3": "c"}, 21658, "header"),
                (sid_of(promo), None, 21656, "missing a value"),
                (sid_of({**promo, "name": "waiting_for_review"}), None, 63027, "waiting for Meta's review"),
                (sid_of({**promo, "name": "turned_down"}), None, 63027, "rejected"),
                ("HX" + "0" * 32, None, 21655, "not found"),
            ]
            for sid, variables, code, words in cases:
                answer = await client.post(messages_path(), data=create(sid, variables))
                assert (answer.status_code, answer.json()["code"]) == (400, code), (variables, answer.text)
                assert words in answer.json()["message"], answer.json()["message"]
            listed = await client.get(messages_path())
            assert listed.json()["messages"] == []
            answer = await client.post(messages_path(), data=create(sid_of(named), good))
            assert answer.status_code == 201, answer.text


async def test_a_template_of_another_waba_is_not_this_senders(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):
            assert daemon.simulator is not None
            doc = corpus("pywa_seasonal_promotion")
            daemon.simulator.templates.seed(WABA, doc)
            await daemon.template_sync.sync(WABA)
            form = create(sid_of(doc), {"header.1": "x", "1": "a", "2": "b", "3": "c"})
            form["From"] = "whatsapp:+15550000001"  # an On-Prem sandbox number of no WABA
            answer = await client.post(messages_path(), data=form)
            assert (answer.status_code, answer.json()["code"]) == (400, 21655)
            assert f"WABA {WABA}" in answer.json()["message"]


async def test_quality_and_category_webhooks_are_applied_and_an_old_one_changes_nothing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path)) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            doc = corpus("pywa_seasonal_promotion")
            sim.templates.seed(WABA, doc)
            await daemon.template_sync.sync(WABA)
            sid = sid_of(doc)
            sim.templates.set_quality(WABA, doc["name"], "YELLOW")
            await until(lambda: daemon.catalog.get(sid).quality == "YELLOW")  # type: ignore[union-attr]
            sim.templates.set_category(WABA, doc["name"], "UTILITY")
            await until(lambda: daemon.catalog.get(sid).category == "UTILITY")  # type: ignore[union-attr]
            template = daemon.catalog.get(sid)
            assert template is not None and template.previous_category == "MARKETING"
            # Meta redelivers a day-old PAUSED: what came since stands.
            stale = {
                "event": "PAUSED",
                "message_template_id": int(template.id),
                "message_template_name": template.name,
                "message_template_language": "en-US",
                "reason": "NONE",
            }
            assert sim.cloud.emit_field(WABA, "message_template_status_update", stale)  # time: now
            await until(lambda: daemon.catalog.get(sid).status == "PAUSED")  # type: ignore[union-attr]
            old = {**stale, "event": "APPROVED"}
            # The same shape with an entry time a day back (a redelivery), straight to the route.
            body = json.dumps(
                {
                    "object": "whatsapp_business_account",
                    "entry": [
                        {
                            "id": WABA,
                            "time": int(template.synced_at) - 86_400,
                            "changes": [{"field": "message_template_status_update", "value": old}],
                        }
                    ],
                }
            ).encode()
            headers = {"X-Hub-Signature-256": signature(SECRET, body), "Content-Type": "application/json"}
            answer = await client.post(f"/webhooks/cloud/{CLOUD.lstrip('+')}", content=body, headers=headers)
            assert answer.status_code == 200
            assert daemon.catalog.get(sid).status == "PAUSED"  # type: ignore[union-attr]


async def test_on_paused_fail_fails_the_queued_messages_and_the_callback_says_why(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(waba_config(tmp_path, on_paused="fail")) as (daemon, client):
            sim = daemon.simulator
            assert sim is not None
            doc = corpus("pywa_coupon_code_fall2023_25off")
            sim.templates.seed(WABA, doc)
            await daemon.template_sync.sync(WABA)
            sid = sid_of(doc)
            daemon.ops.pause(CLOUD)
            queued = await client.post(
                messages_path(), data=create(sid, {"1": "A", "2": "B", "button.1": "C"})
            )
            assert queued.status_code == 201
            sim.templates.review(WABA, doc["name"], "disable")
            await until(lambda: daemon.catalog.get(sid).status == "DISABLED")  # type: ignore[union-attr]
            daemon.ops.resume(CLOUD)

            async def status() -> dict[str, Any]:
                return (await client.get(messages_path(queued.json()["sid"]))).json()  # type: ignore[no-any-return]

            with trio.fail_after(20):
                while (await status())["status"] != "failed":  # noqa: ASYNC110 - a real daemon on the real clock
                    await trio.sleep(0.05)
            failed = await status()
            assert failed["error_code"] == 63027
            assert "disabled by Meta" in failed["error_message"]
            assert sent(daemon) == []


async def test_a_reload_says_a_changed_waba_needs_a_restart(tmp_path: Path) -> None:
    first = waba_config(tmp_path)
    changed = waba_config(tmp_path, on_paused="fail")
    configs = iter([changed])
    with trio.fail_after(60):
        async with running_daemon(first, reload_config=lambda: next(configs)) as (daemon, _client):
            result = await daemon.ops.reload()
            assert result.ok and result.restart_needed == ["wabas"]
            assert result.replaced == [] and result.added == []
