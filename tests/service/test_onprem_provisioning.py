"""An On-Prem number of the config provisioned through the same commands, against the simulated webapp:
account registration with its certificate, the code, the webhook settings pointing back here, health."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import trio

from tests.helpers.daemon import ADMIN_SECTION, running_daemon, sandbox_config
from tests.helpers.onboarding import admin

NUMBER = "+15550000001"
CERT = base64.b64encode(b"CmQKIAjo... certificate from Business Manager").decode()


async def test_an_onprem_number_registers_verifies_and_points_its_webhooks_here(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path, extra=ADMIN_SECTION)) as (daemon, client):
            assert daemon.simulator is not None and daemon.simulator_url is not None
            daemon.simulator.set_webhook_url(NUMBER, None)  # the webapp does not know us yet
            digits = NUMBER.lstrip("+")
            refused = await admin(client, "POST", "/numbers", {"number": NUMBER})
            assert refused.status_code == 400 and "--cert-file" in refused.json()["message"]
            not_base64 = await admin(client, "POST", "/numbers", {"number": NUMBER, "cert": "not base64!"})
            assert not_base64.status_code == 502 and not_base64.json()["step"] == "add"
            assert "code 1009" in not_base64.json()["message"]
            added = await admin(client, "POST", "/numbers", {"number": NUMBER, "cert": CERT})
            assert added.status_code == 201, added.text
            assert [(s["step"], s["outcome"]) for s in added.json()["steps"]] == [
                ("add", "done"),
                ("request_code", "done"),
            ]
            async with httpx.AsyncClient(base_url=daemon.simulator_url) as sim:
                code = (await sim.get(f"/_sim/numbers/{digits}/account")).json()["code"]
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            failed = await admin(client, "POST", f"/numbers/{digits}/verify", {"code": wrong})
            assert failed.status_code == 502 and failed.json()["step"] == "verify"
            assert (
                await admin(client, "POST", f"/numbers/{digits}/verify", {"code": code})
            ).status_code == 200
            registered = await admin(client, "POST", f"/numbers/{digits}/register", {})
            assert registered.status_code == 200, registered.text
            steps = {s["step"]: (s["outcome"], s["detail"]) for s in registered.json()["steps"]}
            assert steps["register"][0] == "skipped"
            assert steps["subscribe"][0] == "done" and steps["check"] == ("done", "gateway_status connected")
            assert "config file" in steps["start"][1]
            assert registered.json()["state"] == "active" and registered.json()["next"] is None
            # The webapp posts to our route again: a customer's message arrives and is stored.
            inbound = {"number": NUMBER, "from": "+16505551234", "body": "hi"}
            async with httpx.AsyncClient(base_url=daemon.simulator_url) as sim:
                posted = await sim.post("/_sim/inbound", json=inbound)
                assert posted.status_code < 300, posted.text
            with trio.fail_after(10):
                while daemon.simulator.counters(NUMBER).webhooks_sent == 0:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            # Added again once registered: nothing to redo.
            again = await admin(client, "POST", "/numbers", {"number": NUMBER, "cert": CERT})
            assert again.status_code == 201
            assert {s["step"]: s["outcome"] for s in again.json()["steps"]}["add"] == "skipped"
            profile = await admin(client, "GET", f"/numbers/{digits}/profile")
            assert profile.status_code == 400 and "not confirmed" in profile.json()["message"]
