"""The console as an operator uses it: Debian's chromium (headless) against a real daemon and simulator.

Sends load, logs in through the form, opens every page, checks that the figures the
page shows equal /metrics and the admin API, watches a figure change without a
reload, pauses a number from its page (JavaScript's confirmation accepted) and sees
it paused, and saves a screenshot of each page under the test's tmp dir.
Skips, saying why, where chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.helpers.browser import Browser, browser_missing, open_browser
from tests.helpers.daemon import ADMIN, ADMIN_TOKEN, NUMBERS, admin_config, running_daemon
from tests.helpers.messages import create
from tests.helpers.metrics import Samples, parse, value

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")

CUSTOMERS = [f"+1650555{i:04d}" for i in range(20)]
INVALID = "+15559990001"  # the simulator fails it with 63003 in a status webhook
PER_NUMBER = 30

# The fleet table as the page shows it now: {number: [cell texts]} (one script: the live
# refresh may replace the rows between two WebDriver calls).
FLEET_EXPR = """Object.fromEntries(Array.from(document.querySelectorAll('#fleet tbody tr[data-key]')).map(
  tr => [tr.dataset.key, Array.from(tr.cells).map(td => td.textContent.trim())]))"""
FLEET_CELLS = f"return {FLEET_EXPR};"
COLUMNS = {"state": 3, "outbox": 4, "sent": 12, "failed": 13}


def figure(text: str) -> float:
    return float(text.replace(",", ""))


async def scrape(client: httpx.AsyncClient) -> Samples:
    return parse((await client.get("/metrics")).text)


async def settle(client: httpx.AsyncClient, total: int, failures: int) -> Samples:
    """/metrics once every message has its final status (read, or failed)."""
    with trio.fail_after(60):
        while True:
            samples = await scrape(client)
            done = sum(value(samples, "wadispatch_messages_read_total", number=n) for n in NUMBERS)
            failed = sum(v for (name, _), v in samples.items() if name == "wadispatch_messages_failed_total")
            if done + failed >= total and failed >= failures:
                return samples
            await trio.sleep(0.1)


async def fleet_matches(browser: Browser, samples: Samples, states: dict[str, str]) -> None:
    cells = await browser.script(FLEET_CELLS)
    assert set(cells) == set(NUMBERS)
    for number in NUMBERS:
        row = cells[number]
        assert row[COLUMNS["state"]] == states[number], number
        assert figure(row[COLUMNS["outbox"]]) == value(samples, "wadispatch_outbox_depth", number=number)
        assert figure(row[COLUMNS["sent"]]) == value(samples, "wadispatch_messages_sent_total", number=number)
        failed = sum(
            v
            for (name, labels), v in samples.items()
            if name == "wadispatch_messages_failed_total" and ("number", number) in labels
        )
        assert figure(row[COLUMNS["failed"]]) == failed, number


async def test_an_operator_logs_in_reads_every_page_and_pauses_a_number(tmp_path: Path) -> None:
    screens = tmp_path / "screenshots"
    with trio.fail_after(180):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            sids = []
            for i in range(PER_NUMBER):
                for number in NUMBERS:
                    sids.append(await create(client, number, CUSTOMERS[i % len(CUSTOMERS)], f"load {i}"))
            failed_sid = await create(client, NUMBERS[1], INVALID, "to nobody")
            samples = await settle(client, len(sids) + 1, failures=1)

            async with open_browser(daemon.url, tmp_path / "chromium") as browser:
                # Any console page without a session lands on the login form.
                await browser.open("/console/fleet")
                assert "/console/login" in browser.driver.current_url
                await browser.screenshot(screens / "login.png")
                await browser.script(
                    "document.getElementById('token').value = arguments[0];"
                    "document.querySelector('.login form').submit();",
                    ADMIN_TOKEN,
                )
                await browser.wait_for("return location.pathname === '/console/fleet'")

                # Fleet: what the page shows is what /metrics and the admin API say.
                status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
                states = {n["number"]: n["state"] for n in status["numbers"]}
                await fleet_matches(browser, samples, states)
                # The live refresh ran (JavaScript allowed by the CSP) and drew the sparklines.
                await browser.wait_for("return document.querySelector('#fleet').dataset.updated")
                points = await browser.script(
                    "return document.querySelector('#fleet tbody svg polyline').getAttribute('points')"
                )
                assert points.count(",") >= 2
                # A figure moves on the page without a reload.
                more = [await create(client, NUMBERS[2], CUSTOMERS[0], f"more {i}") for i in range(5)]
                samples = await settle(client, len(sids) + 1 + len(more), failures=1)
                sent = value(samples, "wadispatch_messages_sent_total", number=NUMBERS[2])
                await browser.wait_for(
                    f"return (({FLEET_EXPR})['{NUMBERS[2]}'] || [])[{COLUMNS['sent']}] === '{int(sent):,}'"
                )
                await fleet_matches(browser, await scrape(client), states)
                await browser.screenshot(screens / "fleet.png")

                # A number: its plots drawn by uPlot, then paused from the page.
                target = NUMBERS[1]
                await browser.open(f"/console/numbers/{target}?range=5m")
                await browser.wait_for("return document.querySelectorAll('.plot canvas').length === 3")
                await browser.screenshot(screens / "number.png")
                failures = await browser.script(
                    "return Array.from(document.querySelectorAll('#failures tbody tr'))"
                    ".map(tr => tr.cells[1].textContent.trim())"
                )
                assert failures == [failed_sid]
                assert not daemon.supervisor.actor(target).paused  # type: ignore[union-attr]
                await browser.script("document.getElementById('action-pause').click()")
                alert = await browser.call(lambda: browser.driver.switch_to.alert)
                assert alert.text == f"Pause {target}?"
                await browser.call(alert.accept)
                await browser.wait_for("return location.search === '?done=pause'")
                assert await browser.script("return document.getElementById('state').textContent") == "paused"
                status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
                assert {n["number"]: n["state"] for n in status["numbers"]}[target] == "paused"
                assert daemon.supervisor.actor(target).paused  # type: ignore[union-attr]
                # The page follows a change made elsewhere (the admin API), without a reload.
                admin = f"/admin/v1/numbers/{target}"
                await client.post(f"{admin}/resume", headers=ADMIN, auth=None)
                await browser.wait_for("return document.getElementById('state').textContent === 'running'")
                await client.post(f"{admin}/pause", headers=ADMIN, auth=None)
                await browser.wait_for("return document.getElementById('state').textContent === 'paused'")
                await browser.open("/console/fleet?state=paused")
                paused = await browser.script(FLEET_CELLS)
                assert list(paused) == [target] and paused[target][COLUMNS["state"]] == "paused"
                await client.post(f"{admin}/resume", headers=ADMIN, auth=None)
                await browser.wait_for(
                    "return document.querySelector('#fleet tbody td').textContent === 'No number matches.'"
                )

                # Messages: one by sid (its timeline), and a recipient's.
                await browser.open(f"/console/messages?sid={failed_sid}")
                timeline = await browser.script(
                    "return Array.from(document.querySelectorAll('#timeline tbody tr'))"
                    ".map(tr => tr.cells[0].textContent)"
                )
                assert timeline == ["created (queued)", "sent", "failed"]
                await browser.screenshot(screens / "message.png")
                await browser.open(f"/console/messages?to={CUSTOMERS[0]}")
                found = await browser.script("return document.querySelectorAll('#found tbody tr').length")
                assert found == len([i for i in range(PER_NUMBER) if i % len(CUSTOMERS) == 0]) * 3 + 5

                # Callbacks (none configured here: an empty queue, said so).
                await browser.open("/console/callbacks")
                assert "Nothing queued." in await browser.script("return document.body.textContent")
                await browser.screenshot(screens / "callbacks.png")

                # No page broke its Content-Security-Policy or threw.
                assert await browser.console_errors() == []
    for name in ("login", "fleet", "number", "message", "callbacks"):
        assert (screens / f"{name}.png").stat().st_size > 5000


async def test_with_javascript_off_the_tables_work_and_actions_confirm_on_a_page(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            sids = [await create(client, number, CUSTOMERS[0], "hello") for number in NUMBERS]
            samples = await settle(client, len(sids), failures=0)
            async with open_browser(daemon.url, tmp_path / "chromium", javascript=False) as browser:
                await browser.open("/console/fleet")
                await browser.type_into("#token", ADMIN_TOKEN)
                await browser.click(".login button[type=submit]")
                await browser.wait_for_url("/console/fleet")
                numbers = await browser.texts("#fleet tbody tr td:first-child")
                assert numbers == list(NUMBERS)
                sent = await browser.texts(f"#fleet tbody tr td:nth-child({COLUMNS['sent'] + 1})")
                expected = [value(samples, "wadispatch_messages_sent_total", number=n) for n in NUMBERS]
                assert [figure(t) for t in sent] == expected
                # Sorting is a link: the server sorts.
                await browser.click("#fleet thead th:first-child a")
                await browser.wait_for_url("?order=desc")
                assert await browser.texts("#fleet tbody tr td:first-child") == list(reversed(NUMBERS))
                # No confirm() without JavaScript: the action shows a confirmation page first.
                target = NUMBERS[0]
                await browser.open(f"/console/numbers/{target}")
                assert await browser.texts(".plot canvas") == []  # plots need JavaScript
                await browser.click("#action-pause")
                await browser.wait_for_url("/pause")
                assert (await browser.texts("main form button")) == [f"Yes, pause {target}"]
                assert not daemon.supervisor.actor(target).paused  # type: ignore[union-attr]
                await browser.click("main form button.danger")
                await browser.wait_for_url("?done=pause")
                assert await browser.texts("#state") == ["paused"]
                assert daemon.supervisor.actor(target).paused  # type: ignore[union-attr]
                await browser.screenshot(tmp_path / "screenshots" / "number-no-js.png")
