"""``GET /admin/v1/doctor`` on a real daemon against the simulator's Graph: a healthy onboarded
number, then each thing users get wrong, found and explained with its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dispatcher.service.daemon import Running
from tests.helpers.daemon import ADMIN_SECTION, CLOUD, NUMBERS, mixed_config, running_daemon
from tests.helpers.onboarding import ONBOARDED, WABA, admin, onboard, onboarding_config


async def examine(client: httpx.AsyncClient, number: str = ONBOARDED) -> dict[str, dict[str, Any]]:
    answer = await admin(client, "GET", f"/doctor?number={number.lstrip('+')}")
    assert answer.status_code == 200, answer.text
    (found,) = answer.json()["numbers"]
    return {check["name"]: check for check in found["checks"]}


def sim(daemon: Running) -> Any:
    assert daemon.simulator is not None
    return daemon.simulator


async def test_a_freshly_onboarded_number_is_healthy(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
        await onboard(daemon, client)
        checks = await examine(client)
        assert list(checks) == ["token", "registered", "subscribed", "webhook", "graph", "templates"]
        levels = {name: check["level"] for name, check in checks.items()}
        # The sandbox listens on http: Meta would call only https (a warning with the fix).
        assert levels == {
            "token": "ok",
            "registered": "ok",
            "subscribed": "ok",
            "webhook": "warn",
            "graph": "ok",
            "templates": "ok",
        }
        assert checks["templates"]["detail"].startswith("0 templates (0 approved), synced")
        assert checks["token"]["detail"] == "SYSTEM_USER token, never expires"
        assert "CONNECTED" in checks["registered"]["detail"]
        assert "public_url" in checks["webhook"]["fix"]
        everyone = (await admin(client, "GET", "/doctor")).json()
        # The sandbox's On-Prem numbers too: their webapps answer and post their webhooks here.
        assert [d["number"] for d in everyone["numbers"]] == sorted([ONBOARDED, *NUMBERS])
        assert everyone["ok"] is True
        onprem = next(d for d in everyone["numbers"] if d["number"] == NUMBERS[0])
        assert [(c["name"], c["level"]) for c in onprem["checks"]] == [("webapp", "ok"), ("webhook", "ok")]
        assert daemon.simulator is not None
        daemon.simulator.set_webhook_url(NUMBERS[0], "http://elsewhere.example/hook")
        moved = (await admin(client, "GET", f"/doctor?number={NUMBERS[0].lstrip('+')}")).json()["numbers"][0]
        assert moved["checks"][1]["level"] == "fail" and "numbers register" in moved["checks"][1]["fix"]
        assert (await admin(client, "GET", "/doctor?number=15559990000")).status_code == 404


async def test_what_users_get_wrong_is_found_with_its_fix(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
        await onboard(daemon, client)
        graph = sim(daemon).graph_numbers
        # A short-lived user token copied from the App Dashboard instead of a system user's.
        waba = graph.wabas[WABA]
        waba.token_type, waba.token_expires_at = "USER", int(daemon.wall.now()) + 3600
        # Meta expired the configured version: it serves the calls with the next one.
        sim(daemon).graph_versions.expire(["v23.0"])
        # The app was unsubscribed from the WABA: no webhook would arrive.
        waba.subscribed = False
        # The template sync's token lost its access to the WABA's templates.
        daemon.template_sync.failures[WABA] = "(#200) Permissions error"
        checks = await examine(client)
        assert checks["token"]["level"] == "fail" and "not a system-user token" in checks["token"]["detail"]
        assert "system user" in checks["token"]["fix"]
        assert checks["graph"]["level"] == "fail" and "served it as v24.0" in checks["graph"]["detail"]
        assert checks["subscribed"]["level"] == "fail" and "no webhook" in checks["subscribed"]["detail"]
        assert "numbers register" in checks["subscribed"]["fix"]
        assert checks["templates"]["level"] == "fail" and "Permissions error" in checks["templates"]["detail"]
        report = (await admin(client, "GET", "/doctor")).json()
        assert report["ok"] is False
        metrics = (await client.get("/metrics")).text
        assert 'wadispatch_graph_version_upgraded{served="v24.0",version="v23.0"} 1.0' in metrics


async def test_a_revoked_token_fails_every_graph_check_with_the_token_fix(tmp_path: Path) -> None:
    async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
        await onboard(daemon, client)
        sim(daemon).graph_numbers.wabas[WABA].token = "EAArotated"
        checks = await examine(client)
        assert checks["registered"]["level"] == "fail" and "code 190" in checks["registered"]["detail"]
        assert "system-user token" in checks["registered"]["fix"]


async def test_a_configured_sandbox_number_without_a_waba(tmp_path: Path) -> None:
    config = mixed_config(tmp_path, extra_sections=ADMIN_SECTION)
    async with running_daemon(config) as (_, client):
        checks = await examine(client, CLOUD)
        assert checks["token"]["level"] == "ok"
        assert checks["subscribed"]["level"] == "warn" and "names no WABA" in checks["subscribed"]["detail"]
        assert checks["webhook"]["detail"].endswith("answers the handshake")
