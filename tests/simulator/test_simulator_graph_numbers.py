"""The simulator's Graph number management, sans-IO: a number walked from nothing to sending,
each step's refusals with Meta's codes, the account webhooks it posts, the version header."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from dispatcher.core.clock import TrioWallClock
from dispatcher.simulator import Simulator
from dispatcher.simulator.cloud import sign
from dispatcher.simulator.exchange import SimRequest, SimResponse
from tests.helpers.simulator_core import Captured

WABA = "102290129340398"
TOKEN = "EAAwabasystemuser"
SECRET = "app-secret-0123456789"
NUMBER = "+15550783881"
V = "/v23.0"


def call(sim: Simulator, method: str, target: str, body: object = None, *, token: str = TOKEN) -> SimResponse:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    return sim.respond(SimRequest(method, target, headers, raw))


def data(resp: SimResponse) -> Any:
    return json.loads(resp.body)


def code_of(resp: SimResponse) -> int:
    assert resp.status >= 400, resp.body
    return int(json.loads(resp.body)["error"]["code"])


def make(**waba: Any) -> tuple[Simulator, Captured, str]:
    captured = Captured()
    sim = Simulator(wall_clock=TrioWallClock(start=1_700_000_000.0), cloud_poster=captured, fault_seed=7)
    made = call(sim, "POST", "/_sim/graph/wabas", {"id": WABA, "token": TOKEN, "app_secret": SECRET, **waba})
    assert made.status == 201, made.body
    added = call(
        sim, "POST", f"/_sim/graph/wabas/{WABA}/numbers", {"number": NUMBER, "verified_name": "Lucky"}
    )
    return sim, captured, data(added)["id"]


def onboard(sim: Simulator, pnid: str, pin: str = "123456") -> None:
    assert call(sim, "POST", f"{V}/{pnid}/request_code", b"code_method=SMS&language=en_US").status == 200
    code = data(call(sim, "GET", f"/_sim/graph/numbers/{pnid}"))["verification_code"]
    assert call(sim, "POST", f"{V}/{pnid}/verify_code", {"code": code}).status == 200
    assert (
        call(sim, "POST", f"{V}/{pnid}/register", {"messaging_product": "whatsapp", "pin": pin}).status == 200
    )


async def test_a_number_walks_from_added_to_sending() -> None:
    sim, _, pnid = make()
    send = {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "hi"}}
    # Not registered: no /messages for it yet.
    assert call(sim, "POST", f"{V}/{pnid}/messages", send).status == 400
    fields = data(call(sim, "GET", f"{V}/{pnid}?fields=code_verification_status,status,platform_type"))
    assert fields == {
        "id": pnid,
        "code_verification_status": "NOT_VERIFIED",
        "status": "PENDING",
        "platform_type": "NOT_APPLICABLE",
    }
    onboard(sim, pnid)
    fields = data(call(sim, "GET", f"{V}/{pnid}?fields=verified_name,quality_rating,throughput,status"))
    assert fields["status"] == "CONNECTED" and fields["throughput"] == {"level": "STANDARD"}
    assert fields["verified_name"] == "Lucky" and fields["quality_rating"] == "GREEN"
    sent = call(sim, "POST", f"{V}/{pnid}/messages", send)
    assert sent.status == 200 and data(sent)["messages"][0]["id"].startswith("wamid.")
    # Registering again with the same PIN is idempotent; another PIN is Meta's 133005.
    assert (
        call(sim, "POST", f"{V}/{pnid}/register", {"messaging_product": "whatsapp", "pin": "123456"}).status
        == 200
    )
    wrong = call(sim, "POST", f"{V}/{pnid}/register", {"messaging_product": "whatsapp", "pin": "654321"})
    assert code_of(wrong) == 133005


async def test_refusals_carry_metas_codes() -> None:
    sim, _, pnid = make()
    register = {"messaging_product": "whatsapp", "pin": "123456"}
    assert code_of(call(sim, "POST", f"{V}/{pnid}/register", register)) == 133006  # not verified
    assert code_of(call(sim, "POST", f"{V}/{pnid}/request_code", {"code_method": "PIGEON"})) == 100
    assert (
        code_of(call(sim, "POST", f"{V}/{pnid}/request_code", {"code_method": "VOICE"})) == 100
    )  # no language
    assert (
        call(sim, "POST", f"{V}/{pnid}/request_code", {"code_method": "VOICE", "language": "en_US"}).status
        == 200
    )
    assert code_of(call(sim, "POST", f"{V}/{pnid}/verify_code", {"code": "000000x"})) == 136025
    assert code_of(call(sim, "GET", f"{V}/{pnid}", token="EAAstolen")) == 190
    assert (
        code_of(call(sim, "POST", f"{V}/{pnid}/register", {"messaging_product": "whatsapp", "pin": "12"}))
        == 100
    )


async def test_register_and_deregister_are_limited_to_ten_in_72_hours() -> None:
    sim, _, pnid = make()
    onboard(sim, pnid)
    for _ in range(4):
        assert call(sim, "POST", f"{V}/{pnid}/deregister").status == 200
        assert (
            call(
                sim, "POST", f"{V}/{pnid}/register", {"messaging_product": "whatsapp", "pin": "123456"}
            ).status
            == 200
        )
    assert call(sim, "POST", f"{V}/{pnid}/deregister").status == 200  # the tenth call
    assert (
        code_of(call(sim, "POST", f"{V}/{pnid}/register", {"messaging_product": "whatsapp", "pin": "123456"}))
        == 133016
    )


async def test_profile_is_read_back_and_checked() -> None:
    sim, _, pnid = make()
    profile = {"messaging_product": "whatsapp", "about": "We grow shrubs", "websites": ["https://x.example"]}
    assert call(sim, "POST", f"{V}/{pnid}/whatsapp_business_profile", profile).status == 200
    got = data(call(sim, "GET", f"{V}/{pnid}/whatsapp_business_profile?fields=about,websites"))
    assert got["data"][0]["about"] == "We grow shrubs" and got["data"][0]["websites"] == ["https://x.example"]
    too_long = {"messaging_product": "whatsapp", "about": "x" * 140}
    assert code_of(call(sim, "POST", f"{V}/{pnid}/whatsapp_business_profile", too_long)) == 100
    three = {"messaging_product": "whatsapp", "websites": ["https://a.example"] * 3}
    assert code_of(call(sim, "POST", f"{V}/{pnid}/whatsapp_business_profile", three)) == 100


async def test_webhooks_go_where_meta_sends_them() -> None:
    sim, captured, pnid = make(callback_url="http://app.example/hook")
    onboard(sim, pnid)
    assert data(call(sim, "GET", f"{V}/{WABA}/subscribed_apps")) == {"data": []}
    override = {
        "override_callback_uri": "http://daemon.example/webhooks/cloud/15550783881",
        "verify_token": "vt",
    }
    assert (
        code_of(call(sim, "POST", f"{V}/{WABA}/subscribed_apps", {"override_callback_uri": "ftp://x"})) == 100
    )
    assert call(sim, "POST", f"{V}/{WABA}/subscribed_apps", override).status == 200
    apps = data(call(sim, "GET", f"{V}/{WABA}/subscribed_apps"))["data"]
    assert apps[0]["override_callback_uri"] == override["override_callback_uri"]
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        posted = call(
            sim,
            "POST",
            f"/_sim/graph/numbers/{pnid}/quality",
            {"event": "THROUGHPUT_UPGRADE", "tier": "TIER_2K"},
        )
        assert posted.status == 202
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    url, body, headers = captured.posts[-1]
    assert url == override["override_callback_uri"]
    assert headers["x-hub-signature-256"] == sign(SECRET, body)
    change = json.loads(body)["entry"][0]
    assert change["id"] == WABA
    assert change["changes"][0]["field"] == "phone_number_quality_update"
    assert change["changes"][0]["value"] == {
        "display_phone_number": "15550783881",
        "event": "THROUGHPUT_UPGRADE",
        "current_limit": "TIER_UNLIMITED",
        "max_daily_conversations_per_business": "TIER_2K",
    }
    # Enforced by the simulator too: the number now sends at 1,000/s with a 2,000 tier.
    served = {n.phone_number_id: n for n in sim.cloud.numbers()}[pnid]
    assert served.throughput == 1000.0 and served.messaging_limit == 2000
    # The phone-level override wins over the WABA's for the number's messages.
    phone_hook = {
        "webhook_configuration": {"override_callback_uri": "http://daemon.example/p", "verify_token": "v"}
    }
    assert call(sim, "POST", f"{V}/{pnid}", phone_hook).status == 200
    assert {n.phone_number_id: n for n in sim.cloud.numbers()}[pnid].webhook_url == "http://daemon.example/p"
    assert call(sim, "DELETE", f"{V}/{WABA}/subscribed_apps").status == 200
    assert data(call(sim, "GET", f"{V}/{WABA}/subscribed_apps")) == {"data": []}


async def test_debug_token_tells_a_system_user_token_from_a_short_lived_user_token() -> None:
    sim, _, _ = make()
    system = data(call(sim, "GET", f"{V}/debug_token?input_token={TOKEN}"))["data"]
    assert system["type"] == "SYSTEM_USER" and system["expires_at"] == 0 and system["is_valid"]
    call(
        sim,
        "POST",
        "/_sim/graph/wabas",
        {
            "id": "77",
            "token": "EAAuser",
            "app_secret": "s",
            "token_type": "USER",
            "token_expires_at": 1_700_003_600,
        },
    )
    user = data(call(sim, "GET", f"{V}/debug_token?input_token=EAAuser"))["data"]
    assert user["type"] == "USER" and user["expires_at"] == 1_700_003_600
    assert data(call(sim, "GET", f"{V}/debug_token?input_token=nope"))["data"]["is_valid"] is False


@pytest.mark.parametrize(
    ("expired", "served"), [([], "v21.0"), (["v21.0"], "v22.0"), (["v21.0", "v22.0"], "v23.0")]
)
async def test_an_expired_version_is_served_by_the_next_one(expired: list[str], served: str) -> None:
    sim, _, pnid = make()
    assert call(sim, "POST", "/_sim/graph/versions", {"expired": expired}).status == 200
    resp = call(sim, "GET", f"/v21.0/{pnid}?fields=status")
    assert resp.status == 200 and resp.header("facebook-api-version") == served
    assert call(sim, "POST", "/_sim/graph/versions", {"expired": ["21"]}).status == 400
