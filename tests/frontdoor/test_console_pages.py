"""What the console's pages show, over HTTP against a real daemon, its simulator and customer endpoints.

The tables are read as a person with JavaScript off would read them (server-rendered
HTML); each figure is checked against /metrics, the admin API or the stored record.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import trio

from dispatcher.core import number_watch
from tests.helpers.callback_sink import Hit, open_sink
from tests.helpers.console import login
from tests.helpers.daemon import ADMIN, ADMIN_SECTION, messages_path, running_daemon, sandbox_config
from tests.helpers.messages import create, wait_status
from tests.helpers.metrics import parse, value
from tests.helpers.onboarding import ONBOARDED, onboard, onboarding_config

PAUSED, FAILING, DELIVERING = "+15550000001", "+15550000002", "+15550000003"
CUSTOMER = "+15551234567"
INVALID = "+15559990001"  # the simulator's invalid-recipient range: a status webhook fails it (63003)
CALLBACKS = """
[callbacks]
allow_private = ["127.0.0.1/32"]
poll_interval = 0.05
backoff_initial = 0.05
backoff_max = 0.2
"""
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
_TAG = re.compile(r"<[^>]+>")


def row_of(page: str, key: str) -> list[str]:
    """The texts of the cells of the table row keyed ``key`` (``data-key``)."""
    found = re.search(rf'<tr data-key="{re.escape(key)}">(.*?)</tr>', page, re.S)
    assert found is not None, f"no row {key}"
    return [html.unescape(_TAG.sub("", cell)).strip() for cell in _CELL.findall(found.group(1))]


def table(page: str, table_id: str) -> list[list[str]]:
    found = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', page, re.S)
    assert found is not None, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", found.group(1), re.S)
    return [[html.unescape(_TAG.sub("", c)).strip() for c in _CELL.findall(r)] for r in rows if "<td" in r]


def figure(text: str) -> int:
    return int(text.replace(",", ""))


async def failing(_: Hit) -> tuple[int, bytes]:
    return 503, b"down for maintenance"


@pytest.mark.parametrize("buckets", [1, 4])
async def test_pages_show_the_fleet_a_number_a_message_and_callbacks(tmp_path: Path, buckets: int) -> None:
    """With 4 buckets the three numbers live in different LMDB environments: every page gathers."""
    with trio.fail_after(60):
        async with open_sink() as good, open_sink(respond=failing) as bad:
            cfg = sandbox_config(tmp_path / "data", extra=ADMIN_SECTION + CALLBACKS, buckets=buckets)
            async with running_daemon(cfg) as (daemon, client):
                paused = daemon.supervisor.actor(PAUSED)
                assert paused is not None
                paused.pause()
                if buckets > 1:  # the numbers' messages and callbacks are in different environments
                    assert len({daemon.buckets.index(n) for n in (PAUSED, FAILING, DELIVERING)}) > 1
                for to in ("+447700900001", "+447700900002", "+447700900003", "+4915112345678", CUSTOMER):
                    await create(client, PAUSED, to)
                failed_sid = await create(client, FAILING, INVALID, StatusCallback=f"{bad.url}/status")
                delivered_sid = await create(client, DELIVERING, CUSTOMER, StatusCallback=f"{good.url}/cb")
                await wait_status(client, failed_sid, "failed", "undelivered")
                await wait_status(client, delivered_sid, "read")
                await good.wait_for(lambda s: len(s.delivered()) >= 3)
                await bad.wait_for(lambda s: len(s.hits) >= 2)
                await login(client)

                metrics = parse((await client.get("/metrics")).text)
                fleet = (await client.get("/console/fleet", auth=None)).text
                paused_row = row_of(fleet, PAUSED)
                assert paused_row[0] == PAUSED and paused_row[3] == "paused"
                depth = value(metrics, "wadispatch_outbox_depth", number=PAUSED)
                assert figure(paused_row[4]) == depth == 5
                assert paused_row[5].endswith(" s")  # the oldest has waited seconds
                delivering_row = row_of(fleet, DELIVERING)
                assert figure(delivering_row[12]) == value(
                    metrics, "wadispatch_messages_sent_total", number=DELIVERING
                )
                failing_row = row_of(fleet, FAILING)
                assert (
                    figure(failing_row[13])
                    == 1
                    == value(metrics, "wadispatch_messages_failed_total", number=FAILING, error_code="63003")
                )
                status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
                for entry in status["numbers"]:
                    assert row_of(fleet, entry["number"])[3] == entry["state"]
                assert "Quality" not in fleet  # no number has a rating: no column pretends to

                page = (await client.get(f"/console/numbers/{PAUSED}", auth=None)).text
                shape = table(page, "shape")
                assert shape[0][:3] == ["all", "5", "5"]  # every entry younger than a minute
                assert {r[0]: r[1] for r in shape[1:]} == {"+44": "3", "+49": "1", "+1": "1"}
                outbox = (
                    await client.get(f"/admin/v1/numbers/{PAUSED}/outbox", headers=ADMIN, auth=None)
                ).json()
                assert outbox["depth"] == 5

                page = (await client.get(f"/console/numbers/{FAILING}", auth=None)).text
                failures = table(page, "failures")
                assert len(failures) == 1 and failures[0][1] == failed_sid and failures[0][4] == "63003"

                page = (await client.get(f"/console/messages?sid={failed_sid}", auth=None)).text
                steps = table(page, "timeline")
                assert [s[0] for s in steps] == ["created (queued)", "sent", "failed"]
                attempts = table(page, "attempts")
                assert attempts and all(a[4] == "retry" and a[5] == "503" for a in attempts)

                page = (await client.get(f"/console/messages?sid={delivered_sid}", auth=None)).text
                assert [s[0] for s in table(page, "timeline")] == [
                    "created (queued)",
                    "sent",
                    "delivered",
                    "read",
                ]
                reported = [a[2] for a in table(page, "attempts") if a[4] == "delivered"]
                assert reported == ["sent", "delivered", "read"]

                page = (await client.get(f"/console/messages?to={CUSTOMER}", auth=None)).text
                found = {r[1] for r in table(page, "found")}
                assert delivered_sid in found and len(found) == 2  # and the paused number's
                page = (await client.get("/console/messages?sid=SM" + "0" * 32, auth=None)).text
                assert "No message SM" in page
                resp = await client.get(f"/console/messages?to={CUSTOMER}&since=yesterday", auth=None)
                assert resp.status_code == 400 and "since: expected a date" in resp.text

                page = (await client.get("/console/callbacks", auth=None)).text
                destinations = table(page, "destinations")
                bad_origin = bad.url
                bad_row = next(r for r in destinations if r[0] == bad_origin)
                assert figure(bad_row[1]) >= 1 and figure(bad_row[4]) >= 1
                assert any(r[1] == failed_sid and r[4] == "503" for r in table(page, "callback-failures"))

                live = (await client.get("/console/api/callbacks", auth=None)).json()
                assert bad_origin in live["numbers"]


async def test_bad_queries_and_unknown_numbers_are_named(tmp_path: Path) -> None:
    with trio.fail_after(30):
        cfg = sandbox_config(tmp_path / "data", extra=ADMIN_SECTION)
        async with running_daemon(cfg) as (_, client):
            await login(client)
            for query, message in (
                ("sort=nope", "sort: one of"),
                ("order=up", "order: asc or desc"),
                ("state=sleepy", "state: one of"),
                ("size=0", "size: between 1 and 500"),
                ("page=x", "page: expected an integer"),
            ):
                resp = await client.get(f"/console/fleet?{query}", auth=None)
                assert resp.status_code == 400 and message in resp.text, query
                live = await client.get(f"/console/api/fleet?{query}", auth=None)
                assert live.status_code == 400 and message in live.json()["error"]
            resp = await client.get("/console/numbers/+19999999999", auth=None)
            assert resp.status_code == 404 and "No number +19999999999" in resp.text
            assert (await client.get("/console/api/numbers/+19999999999", auth=None)).status_code == 404
            csrf = await login(client)
            resp = await client.post("/console/numbers/+15550000001/explode", data={"csrf": csrf}, auth=None)
            assert resp.status_code == 404


SERVICE = "MG" + "e" * 32
FALLBACK_SERVICE = f"""
[[services]]
sid = "{SERVICE}"
account = "AC00000000000000000000000000000001"
numbers = ["{PAUSED}"]
[services.fallback]
from = "{DELIVERING}"
error_codes = [63003]
"""


async def test_a_message_page_links_its_fallback_both_ways(tmp_path: Path) -> None:
    with trio.fail_after(60):
        cfg = sandbox_config(tmp_path / "data", extra=ADMIN_SECTION + FALLBACK_SERVICE)
        async with running_daemon(cfg) as (_, client):
            resp = await client.post(
                messages_path(), data={"MessagingServiceSid": SERVICE, "To": INVALID, "Body": "code 4711"}
            )
            primary = resp.json()["sid"]
            with trio.fail_after(15):
                while "fallback_sid" not in (record := (await client.get(messages_path(primary))).json()):  # noqa: ASYNC110 - real clock
                    await trio.sleep(0.05)
            fallback = record["fallback_sid"]
            await login(client)
            page = (await client.get(f"/console/messages?sid={primary}", auth=None)).text
            assert f'id="fallback-link">{fallback}</a>' in page and "on 63003" in page
            page = (await client.get(f"/console/messages?sid={fallback}", auth=None)).text
            assert f'<a href="/console/messages?sid={primary}">{primary}</a>' in page


async def test_the_quality_column_appears_once_meta_rates_a_number(tmp_path: Path) -> None:
    """Meta's account webhooks (the simulator's Graph) give the number a rating and a problem."""
    with trio.fail_after(60):
        async with running_daemon(onboarding_config(tmp_path / "data")) as (daemon, client):
            await login(client)
            fleet = (await client.get("/console/fleet", auth=None)).text
            assert "Quality" not in fleet  # nobody rated yet: no column of dashes
            status = await onboard(daemon, client)
            assert daemon.simulator is not None
            graph = daemon.simulator.graph_numbers
            graph.quality_event(status["phone_number_id"], "FLAGGED", None, legacy=True)
            with trio.fail_after(10):
                while "flagged" not in (live := (await client.get("/console/api/fleet", auth=None)).text):  # noqa: ASYNC110 - real clock
                    await trio.sleep(0.05)
            # As the account watch recorded it: the rating from the onboarding check, the problem since.
            recorded = number_watch.load(daemon.buckets.for_number(ONBOARDED), ONBOARDED)
            shown = f"{recorded.quality} · flagged"
            fleet = (await client.get("/console/fleet", auth=None)).text
            assert "Quality" in fleet and recorded.quality in ("GREEN", "YELLOW", "RED")
            assert row_of(fleet, ONBOARDED)[12] == shown
            assert row_of(fleet, PAUSED)[12] == "—"  # the page's other numbers: Meta said nothing
            assert f'"text":"{shown}"' in live
            page = (await client.get(f"/console/numbers/{ONBOARDED}", auth=None)).text
            assert row_of(page, ONBOARDED)[12] == shown
