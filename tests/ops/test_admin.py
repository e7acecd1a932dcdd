"""Admin API over real HTTP: its own bearer credential, status, outbox, pause/resume, drain, token."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dispatcher import config as configuration
from tests.helpers.daemon import (
    ACCOUNT,
    ADMIN,
    ADMIN_SECTION,
    ADMIN_TOKEN,
    admin_config,
    messages_path,
    running_daemon,
    sandbox_config,
)
from tests.helpers.messages import create

SENDER = "+15550000001"
CUSTOMER = "+15551234567"


async def test_admin_routes_need_the_admin_bearer_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            url = "/admin/v1/status"
            # The account's Basic credential is not an admin credential.
            resp = await client.get(url)
            assert resp.status_code == 401 and resp.json()["code"] == 20003
            for header in ("Bearer wrong-token", f"Basic {ADMIN_TOKEN}", "Bearer", ""):
                resp = await client.get(url, headers={"Authorization": header}, auth=None)
                assert resp.status_code == 401, header
            # Also for admin paths that do not exist: the guard runs before routing answers.
            assert (await client.get("/admin/v1/nope")).status_code == 401
            assert (await client.post("/admin/v1/numbers/15550000001/pause")).status_code == 401
            assert not daemon.supervisor.actor(SENDER).paused  # type: ignore[union-attr]
            resp = await client.get(url, headers=ADMIN, auth=None)
            assert resp.status_code == 200


async def test_admin_api_is_off_without_a_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (_, client):
            resp = await client.get(
                "/admin/v1/status", headers={"Authorization": "Bearer anything-at-all-here"}
            )
            assert resp.status_code == 403
            assert "disabled" in resp.json()["message"]


def test_admin_token_must_be_long_enough(tmp_path: Path) -> None:
    with pytest.raises(
        configuration.ConfigError, match=r"^admin\.token: too short \(5 characters\): use at least 16"
    ):
        sandbox_config(tmp_path, extra='[admin]\ntoken = { value = "short" }\n')
    with pytest.raises(configuration.ConfigError, match=r"^admin\.protect_metrics: needs admin\.token$"):
        sandbox_config(tmp_path, extra="[admin]\nprotect_metrics = true\n")
    with pytest.raises(configuration.ConfigError, match=r"^admin\.token\.env: environment variable"):
        sandbox_config(tmp_path, extra='[admin]\ntoken = { env = "WADISPATCH_TEST_UNSET_VAR" }\n')


async def test_status_lists_every_number(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (_, client):
            sid = await create(client, SENDER, CUSTOMER, "hello")
            with trio.fail_after(10):
                while True:
                    if (await client.get(messages_path(sid))).json()["status"] != "queued":
                        break
                    await trio.sleep(0.02)
                # The record turns "sent" when mark_sent commits; the actor counts the send
                # when its task resumes after that commit, which a request can precede.
                while True:
                    body = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
                    numbers = {n["number"]: n for n in body["numbers"]}
                    if numbers[SENDER]["sent"] >= 1:
                        break
                    await trio.sleep(0.02)
            assert sorted(numbers) == ["+15550000001", "+15550000002", "+15550000003"]
            first = numbers[SENDER]
            assert first["state"] == "running" and first["sent"] == 1 and first["outbox"] == 0
            assert first["rate"] == 20.0 and first["burst"] == 60
            # The simulator's tokens last 7 days.
            assert 6 * 86400 < first["token_expires_in"] <= 7 * 86400
            assert body["store_commits"] >= 1


async def test_pause_holds_messages_in_the_outbox_and_resume_sends_them(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            resp = await client.post("/admin/v1/numbers/+15550000001/pause", headers=ADMIN, auth=None)
            assert resp.status_code == 200
            assert resp.json() == {"number": SENDER, "state": "paused", "outbox": 0}
            sids = [await create(client, SENDER, f"+1555123000{i}", f"m{i}") for i in range(3)]
            await trio.sleep(0.3)  # real clock: give a wrongly running actor time to send
            assert daemon.simulator is not None and daemon.simulator.received(SENDER) == []
            outbox = (
                await client.get("/admin/v1/numbers/15550000001/outbox", headers=ADMIN, auth=None)
            ).json()
            assert outbox["depth"] == 3 and not outbox["truncated"]
            assert [e["sid"] for e in outbox["entries"]] == sids
            assert {e["status"] for e in outbox["entries"]} == {"queued"}
            page = (
                await client.get("/admin/v1/numbers/15550000001/outbox?limit=2", headers=ADMIN, auth=None)
            ).json()
            assert page["depth"] == 3 and page["truncated"] and len(page["entries"]) == 2
            status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
            assert {n["number"]: n["state"] for n in status["numbers"]}[SENDER] == "paused"
            resp = await client.post(
                "/admin/v1/numbers/whatsapp:+15550000001/resume", headers=ADMIN, auth=None
            )
            assert resp.json()["state"] == "running"
            with trio.fail_after(10):
                while True:
                    if len(daemon.simulator.received(SENDER)) == 3:
                        break
                    await trio.sleep(0.02)


async def test_drain_refuses_new_messages_and_empties_the_outbox(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            await client.post("/admin/v1/numbers/15550000002/pause", headers=ADMIN, auth=None)
            await create(client, "+15550000002", CUSTOMER, "before")
            resp = await client.post("/admin/v1/numbers/15550000002/drain", headers=ADMIN, auth=None)
            assert resp.json()["state"] == "draining"  # drain also lifts a pause
            refused = await client.post(
                messages_path(),
                data={"From": "whatsapp:+15550000002", "To": "whatsapp:+15551234567", "Body": "after"},
            )
            assert refused.status_code == 503 and refused.json()["code"] == 20503
            # Other numbers still take messages.
            await create(client, "+15550000003", CUSTOMER, "other")
            with trio.fail_after(10):
                while True:
                    path = "/admin/v1/numbers/15550000002/outbox"
                    if (await client.get(path, headers=ADMIN, auth=None)).json()["depth"] == 0:
                        break
                    await trio.sleep(0.02)
            assert daemon.simulator is not None
            assert [r.content for r in daemon.simulator.received("+15550000002")] == ["before"]
            resp = await client.post("/admin/v1/numbers/15550000002/resume", headers=ADMIN, auth=None)
            assert resp.json()["state"] == "running"
            await create(client, "+15550000002", CUSTOMER, "accepted again")


async def test_token_refresh_logs_in_again(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (_, client):
            before = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
            n1 = {n["number"]: n for n in before["numbers"]}[SENDER]
            assert n1["token_expires_in"] is not None
            resp = await client.post("/admin/v1/numbers/15550000001/token/refresh", headers=ADMIN, auth=None)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["number"] == SENDER and body["refreshes"] >= 2
            assert body["expires_in"] > 6 * 86400


async def test_unknown_numbers_and_bad_arguments(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (_, client):
            for method, path in [
                ("GET", "/admin/v1/numbers/15559999999/outbox"),
                ("POST", "/admin/v1/numbers/15559999999/pause"),
                ("POST", "/admin/v1/numbers/15559999999/resume"),
                ("POST", "/admin/v1/numbers/15559999999/drain"),
                ("POST", "/admin/v1/numbers/15559999999/token/refresh"),
            ]:
                resp = await client.request(method, path, headers=ADMIN, auth=None)
                assert resp.status_code == 404, path
                assert resp.json()["message"] == "No number +15559999999 is configured"
            for bad in ("x", "0", "-3"):
                resp = await client.get(
                    f"/admin/v1/numbers/15550000001/outbox?limit={bad}", headers=ADMIN, auth=None
                )
                assert resp.status_code == 400, bad
            resp = await client.get("/admin/v1/numbers/15550000001/pause", headers=ADMIN, auth=None)
            assert resp.status_code == 405


async def test_token_refresh_that_cannot_log_in_is_a_502(tmp_path: Path) -> None:
    unreachable = f"""
[[numbers]]
number = "+15550000009"
account = "{ACCOUNT}"
endpoints = ["http://127.0.0.1:9"]
password = {{ value = "Passw0rd!" }}
webhook_secret = {{ value = "hook-9-secret-0123" }}
request_timeout = 1.0
"""
    cfg = sandbox_config(tmp_path / "data", extra=unreachable + ADMIN_SECTION)
    with trio.fail_after(30):
        async with running_daemon(cfg) as (_, client):
            resp = await client.post("/admin/v1/numbers/15550000009/token/refresh", headers=ADMIN, auth=None)
            assert resp.status_code == 502
            assert resp.json()["message"].startswith("Login for +15550000009 failed")
            status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
            n9 = {n["number"]: n for n in status["numbers"]}["+15550000009"]
            assert n9["token_expires_in"] is None
