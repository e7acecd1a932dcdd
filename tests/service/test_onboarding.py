"""Onboarding a Cloud number through the admin API of a real daemon, against the simulator's Graph:
every step, its refusals naming the step and Meta's error, resuming, the actor started without a
restart (and again after one), the webhooks it subscribed arriving, removal."""

from __future__ import annotations

from pathlib import Path

import trio

from dispatcher.core import onboarding_state, window
from tests.helpers.daemon import CUSTOMER, messages_path, running_daemon
from tests.helpers.messages import wait_for
from tests.helpers.onboarding import (
    ONBOARDED,
    PIN,
    WABA,
    admin,
    code_of,
    onboard,
    onboarding_config,
)

DIGITS = ONBOARDED.lstrip("+")


async def test_a_number_goes_from_nothing_to_delivering_without_a_restart(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
        assert daemon.supervisor.actor(ONBOARDED) is None
        status = await onboard(daemon, client)
        assert status["state"] == "active" and status["error"] is None
        assert [s["step"] for s in status["steps"]] == ["register", "subscribe", "check", "start"]
        assert all(s["outcome"] == "done" for s in status["steps"])
        assert daemon.supervisor.actor(ONBOARDED) is not None
        assert daemon.simulator is not None
        graph = daemon.simulator.graph_numbers
        phone = graph.phones[status["phone_number_id"]]
        assert phone.registered and phone.pin == PIN
        assert phone.override_url == f"{daemon.url}/webhooks/cloud/{DIGITS}"
        assert graph.wabas[WABA].override_url == phone.override_url
        # The customer writes first (its webhook reaches the route the subscribe step set): the
        # 24 h window is open for a free-form reply.
        graph_pnid = status["phone_number_id"]
        daemon.simulator.cloud.inbound_text(graph_pnid, CUSTOMER, "hello?")
        await wait_for(
            lambda: window.is_open(daemon.store, ONBOARDED, CUSTOMER, daemon.wall.now()), timeout=10.0
        )
        sent = await client.post(
            messages_path(),
            data={"From": f"whatsapp:{ONBOARDED}", "To": f"whatsapp:{CUSTOMER}", "Body": "hi"},
        )
        assert sent.status_code == 201, sent.text
        sid = sent.json()["sid"]

        async def delivered() -> bool:
            fetched = await client.get(messages_path(sid))
            return fetched.json()["status"] in ("delivered", "read")

        with trio.fail_after(10):
            while not await delivered():  # noqa: ASYNC110 - the status comes by webhook, over HTTP
                await trio.sleep(0.05)


async def test_each_step_names_itself_and_metas_error_and_resumes(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
        # Not in the WABA and no name to add it with: the add step says so.
        refused = await admin(client, "POST", "/numbers", {"number": ONBOARDED, "waba": WABA})
        assert refused.status_code == 502
        assert refused.json()["step"] == "add" and "verified-name" in refused.json()["message"]
        unknown = await admin(client, "POST", "/numbers", {"number": ONBOARDED, "waba": "999"})
        assert unknown.status_code == 400 and "no WABA 999" in unknown.json()["message"]
        bad = await admin(client, "POST", "/numbers", {"number": "12345", "waba": WABA})
        assert bad.status_code == 400
        added = await admin(
            client, "POST", "/numbers", {"number": ONBOARDED, "waba": WABA, "verified_name": "Lucky"}
        )
        assert added.status_code == 201
        assert [(s["step"], s["outcome"]) for s in added.json()["steps"]] == [
            ("add", "done"),
            ("request_code", "done"),
        ]
        pnid = added.json()["phone_number_id"]
        # Registering before verifying is refused without a call to Meta.
        early = await admin(client, "POST", f"/numbers/{DIGITS}/register", {"pin": PIN})
        assert early.status_code == 502 and early.json()["step"] == "verify"
        wrong_code = f"{(int(code_of(daemon, pnid)) + 1) % 1_000_000:06d}"
        wrong = await admin(client, "POST", f"/numbers/{DIGITS}/verify", {"code": wrong_code})
        assert wrong.status_code == 502
        error = wrong.json()["status"]["error"]
        assert wrong.json()["step"] == "verify" and error["code"] == 136025 and error["fbtrace_id"]
        listed = (await admin(client, "GET", "/numbers")).json()["numbers"]
        assert listed[0]["state"] == "failed at verify"
        assert listed[0]["next"].startswith("wadispatch numbers verify")
        ok = await admin(client, "POST", f"/numbers/{DIGITS}/verify", {"code": code_of(daemon, pnid)})
        assert ok.status_code == 200 and ok.json()["error"] is None
        # Meta has another PIN for the number (set in WhatsApp Manager): 133005 at the register step.
        assert daemon.simulator is not None
        daemon.simulator.graph_numbers.phones[pnid].pin = "135791"
        mismatch = await admin(client, "POST", f"/numbers/{DIGITS}/register", {"pin": PIN})
        assert mismatch.status_code == 502 and mismatch.json()["step"] == "register"
        assert mismatch.json()["status"]["error"]["code"] == 133005
        assert daemon.supervisor.actor(ONBOARDED) is None
        record = onboarding_state.load(daemon.store, ONBOARDED)
        assert record is not None and record.error is not None and record.error.step == "register"
        # The right PIN: it resumes at register (add and verify are not run again).
        resumed = await admin(client, "POST", f"/numbers/{DIGITS}/register", {"pin": "135791"})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["state"] == "active"
        assert daemon.supervisor.actor(ONBOARDED) is not None
        # Again: idempotent (register and subscribe skipped, check and start run, one actor).
        again = await admin(client, "POST", f"/numbers/{DIGITS}/register", {"pin": "135791"})
        outcomes = {s["step"]: s["outcome"] for s in again.json()["steps"]}
        assert outcomes == {"register": "skipped", "subscribe": "skipped", "check": "done", "start": "done"}
        assert "already runs" in again.json()["steps"][-1]["detail"]
        bad_pin = await admin(client, "POST", f"/numbers/{DIGITS}/register", {"pin": "12ab56"})
        assert bad_pin.status_code == 400


async def test_an_onboarded_number_runs_again_after_a_restart_and_can_be_removed(tmp_path: Path) -> None:
    config = onboarding_config(tmp_path)
    async with running_daemon(config) as (daemon, client):
        await onboard(daemon, client)
    async with running_daemon(config) as (daemon, client):
        # Started from its record in LMDB (the new simulator does not know it: its check only warns).
        assert daemon.supervisor.actor(ONBOARDED) is not None
        assert daemon.directory.get(ONBOARDED) is not None
        removed = await admin(client, "DELETE", f"/numbers/{DIGITS}")
        assert removed.status_code == 200 and removed.json()["state"] == "removed"
        assert daemon.supervisor.actor(ONBOARDED) is None and daemon.directory.get(ONBOARDED) is None
        assert (await admin(client, "GET", "/numbers")).json() == {"numbers": []}
        assert (await admin(client, "DELETE", f"/numbers/{DIGITS}")).status_code == 404


async def test_the_profile_is_set_and_read_back(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
        await onboard(daemon, client)
        body = {
            "about": "Shrubs, delivered",
            "email": "hi@shrub.example",
            "websites": ["https://shrub.example"],
        }
        set_ = await admin(client, "POST", f"/numbers/{DIGITS}/profile", body)
        assert set_.status_code == 200 and set_.json()["about"] == "Shrubs, delivered"
        got = await admin(client, "GET", f"/numbers/{DIGITS}/profile")
        assert got.json() == {
            "about": "Shrubs, delivered",
            "email": "hi@shrub.example",
            "websites": ["https://shrub.example"],
        }
        too_long = await admin(client, "POST", f"/numbers/{DIGITS}/profile", {"about": "x" * 200})
        assert too_long.status_code == 502 and too_long.json()["step"] == "profile"
        assert "(#100)" in too_long.json()["message"]


async def test_account_webhooks_of_the_onboarded_number_retune_it_live(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path, extra='[watch]\npause_on = ["flagged"]\n')) as (
        daemon,
        client,
    ):
        status = await onboard(daemon, client)
        actor = daemon.supervisor.actor(ONBOARDED)
        assert actor is not None and actor.bucket.rate == 80.0
        assert daemon.simulator is not None
        graph = daemon.simulator.graph_numbers
        graph.quality_event(status["phone_number_id"], "THROUGHPUT_UPGRADE", "TIER_10K")
        await wait_for(lambda: actor.bucket.rate == 1000.0, timeout=10.0, step=0.02)
        assert actor.statistics().tier_limit == 10_000
        graph.quality_event(status["phone_number_id"], "FLAGGED", None, legacy=True)
        await wait_for(lambda: actor.paused, timeout=10.0, step=0.02)
        numbers = (await admin(client, "GET", "/status")).json()["numbers"]
        mine = next(n for n in numbers if n["number"] == ONBOARDED)
        assert (
            mine["problems"] == ["flagged"] and mine["paused_by_meta"] and mine["throughput_level"] == "HIGH"
        )
        metrics = (await client.get("/metrics")).text
        assert f'wadispatch_number_problem{{number="{ONBOARDED}",problem="flagged"}} 1.0' in metrics
        assert f'wadispatch_rate_limit{{number="{ONBOARDED}"}} 1000.0' in metrics
        assert f'wadispatch_number_meta_tier{{number="{ONBOARDED}"}} 10000.0' in metrics
        upgrade = 'event="THROUGHPUT_UPGRADE",field="phone_number_quality_update"'
        assert f"wadispatch_account_updates_total{{{upgrade}}} 1.0" in metrics
        graph.quality_event(status["phone_number_id"], "UNFLAGGED", None, legacy=True)
        await wait_for(lambda: not actor.paused, timeout=10.0, step=0.02)
