"""The whole walk, as an operator and Meta do it, against a real daemon and the simulator's Graph:
a number from nothing (not in the WABA) to delivering a message from a template Meta has just
approved. Every step over HTTP: the admin API, Meta's control API (the code it texts, its template
review), Twilio's Messages API; the webhooks Meta posts arrive at the routes onboarding subscribed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from dispatcher.channels.graph_templates import NewTemplate
from tests.helpers.daemon import CUSTOMER, messages_path, running_daemon
from tests.helpers.onboarding import ONBOARDED, PIN, WABA, admin, onboarding_config
from tests.helpers.templates import corpus, sid_of, until


async def fetch(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await client.get(messages_path(sid))).json()
    return answer


async def test_a_number_from_nothing_to_delivering_a_freshly_approved_template(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(onboarding_config(tmp_path)) as (daemon, client):
            assert daemon.simulator_url is not None
            meta = httpx.AsyncClient(base_url=f"{daemon.simulator_url}/_sim", timeout=10.0)
            digits = ONBOARDED.lstrip("+")
            async with meta:
                # 1. The number is not in the WABA yet: onboarding adds it; Meta texts a code.
                added = await admin(
                    client, "POST", "/numbers", {"number": ONBOARDED, "waba": WABA, "verified_name": "Lucky"}
                )
                assert added.status_code == 201, added.text
                pnid = added.json()["phone_number_id"]
                code = (await meta.get(f"/graph/numbers/{pnid}")).json()["verification_code"]
                # 2. The code, then the PIN: registered, subscribed, checked, started.
                assert (
                    await admin(client, "POST", f"/numbers/{digits}/verify", {"code": code})
                ).status_code == 200
                registered = await admin(client, "POST", f"/numbers/{digits}/register", {"pin": PIN})
                assert registered.json()["state"] == "active", registered.text

                # 3. A template submitted to Meta: PENDING, so a message from it is refused at create.
                doc = corpus("pywa_order_confirmation")
                await daemon.template_sync.submit(WABA, msgspec.convert(doc, NewTemplate))
                sid = sid_of(doc)
                variables = json.dumps(
                    {"header": "https://cdn.example.com/receipt.pdf", "1": "Pablo", "2": "8601"}
                )
                form = {
                    "From": f"whatsapp:{ONBOARDED}",
                    "To": f"whatsapp:{CUSTOMER}",
                    "ContentSid": sid,
                    "ContentVariables": variables,
                }
                early = await client.post(messages_path(), data=form)
                assert early.status_code == 400, early.text
                refusal = early.json()
                assert refusal["code"] == 63027 and "waiting for Meta's review" in refusal["message"]

                # 4. Meta approves it; its webhook reaches the route the subscribe step set.
                review = await meta.post(f"/wabas/{WABA}/templates/{doc['name']}/approve")
                assert review.status_code < 300, review.text
                await until(lambda: daemon.catalog.get(sid).status == "APPROVED")  # type: ignore[union-attr]

                # 5. The customer never wrote: only a template may open the conversation, and it does.
                sent = await client.post(messages_path(), data=form)
                assert sent.status_code == 201, sent.text
                message = sent.json()["sid"]
                with trio.fail_after(15):
                    while (await fetch(client, message))["status"] not in ("delivered", "read"):  # noqa: ASYNC110
                        await trio.sleep(0.05)
            assert daemon.simulator is not None
            (wire,) = daemon.simulator.cloud.received(pnid)
            assert wire["type"] == "template" and wire["template"]["name"] == "order_confirmation"
            assert wire["to"].lstrip("+") == CUSTOMER.lstrip("+")
