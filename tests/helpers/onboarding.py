"""A daemon with a sandbox WABA in its simulator, and the admin calls that onboard a number into it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dispatcher import config as configuration
from dispatcher.service.daemon import Running
from tests.helpers.configs import ACCOUNT
from tests.helpers.daemon import ADMIN, ADMIN_SECTION, sandbox_config

WABA = "102290129340398"
WABA_TOKEN = "EAAwabasystemuser0123"
WABA_SECRET = "waba-app-secret-0123456789"
WABA_VERIFY = "waba-verify-token-0123456789"
ONBOARDED = "+15550783881"
PIN = "246810"


def waba_section(**extra: str) -> str:
    lines = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return f"""
[[wabas]]
id = "{WABA}"
account = "{ACCOUNT}"
access_token = {{ value = "{WABA_TOKEN}" }}
simulated = true
app_secret = {{ value = "{WABA_SECRET}" }}
verify_token = {{ value = "{WABA_VERIFY}" }}
{lines}"""


def onboarding_config(data_dir: Path, *, extra: str = "", **waba: str) -> configuration.Config:
    """The sandbox with the admin API and a simulated WABA numbers can be onboarded into."""
    return sandbox_config(data_dir, extra=ADMIN_SECTION + waba_section(**waba) + extra)


async def admin(client: httpx.AsyncClient, method: str, path: str, body: object = None) -> httpx.Response:
    return await client.request(method, f"/admin/v1{path}", json=body, headers=ADMIN, auth=None)


def code_of(daemon: Running, pnid: str) -> str:
    """The verification code the simulator 'sent' by SMS."""
    assert daemon.simulator is not None
    code = daemon.simulator.graph_numbers.phones[pnid].code
    assert code is not None
    return code


async def onboard(daemon: Running, client: httpx.AsyncClient, number: str = ONBOARDED) -> dict[str, Any]:
    """add -> verify -> register, each answered 2xx; returns the last status."""
    added = await admin(
        client, "POST", "/numbers", {"number": number, "waba": WABA, "verified_name": "Lucky Shrub"}
    )
    assert added.status_code == 201, added.text
    pnid = added.json()["phone_number_id"]
    verified = await admin(
        client, "POST", f"/numbers/{number.lstrip('+')}/verify", {"code": code_of(daemon, pnid)}
    )
    assert verified.status_code == 200, verified.text
    registered = await admin(client, "POST", f"/numbers/{number.lstrip('+')}/register", {"pin": PIN})
    assert registered.status_code == 200, registered.text
    status: dict[str, Any] = registered.json()
    return status
