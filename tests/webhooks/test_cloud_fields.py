"""Cloud webhook fields other than ``messages`` reach the handler registered for their field.

The payloads are real ones (tests/corpus/cloud, each with its ``_source``), signed with the
test app secret and posted to a running daemon's Cloud webhook route.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from dispatcher.channels.cloud_webhook import FieldChange, decode
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import StoreError
from dispatcher.frontdoor.cloud_routes import signature
from dispatcher.webhooks.cloud_fields import CloudFields
from tests.helpers.daemon import CLOUD, SECRET, mixed_config, running_daemon

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "cloud"
INFO = NumberInfo(number="+15550009999", account_sid="AC" + "0" * 32, webhook_secret="")


def corpus(name: str) -> bytes:
    doc = json.loads((CORPUS / name).read_text())
    assert doc.pop("_source")
    return json.dumps(doc).encode()


def test_decode_hands_over_other_fields_with_their_waba_and_time() -> None:
    decoded = decode(corpus("pywa_template_status_update_rejected.json"), "106540352242922")
    (change,) = decoded.fields
    assert (change.field, change.waba_id, change.time, change.where) == (
        "message_template_status_update",
        "102290129340398",
        1751247548.0,
        "entry[0].changes[0]",
    )
    assert json.loads(bytes(change.value))["event"] == "REJECTED"
    assert decoded.events.statuses == [] and decoded.events.inbound == []


async def test_each_change_goes_to_its_handler_and_the_rest_is_counted() -> None:
    fields = CloudFields()
    seen: list[tuple[str, str]] = []

    async def handler(info: NumberInfo, change: FieldChange) -> None:
        seen.append((info.number, change.field))

    fields.register("account_update", handler)
    changes = [
        FieldChange("account_update", "1", 0.0, msgspec.Raw(b"{}"), "entry[0].changes[0]"),
        FieldChange("calls", "1", 0.0, msgspec.Raw(b"{}"), "entry[0].changes[1]"),
        FieldChange("account_update", "1", 0.0, msgspec.Raw(b"{}"), "entry[1].changes[0]"),
    ]
    await fields.dispatch(INFO, changes)
    assert seen == [(INFO.number, "account_update")] * 2
    assert fields.unhandled == {"calls": 1} and not fields.failed
    with pytest.raises(ValueError, match="already has a handler"):
        fields.register("account_update", handler)
    with pytest.raises(ValueError, match="inbox"):
        fields.register("messages", handler)


async def test_a_failing_handler_spoils_nothing_else_but_a_store_failure_goes_up() -> None:
    fields = CloudFields()
    seen: list[str] = []

    async def broken(info: NumberInfo, change: FieldChange) -> None:
        raise KeyError("boom")

    async def fine(info: NumberInfo, change: FieldChange) -> None:
        seen.append(change.where)

    async def full(info: NumberInfo, change: FieldChange) -> None:
        raise StoreError("map full")

    fields.register("a", broken)
    fields.register("b", fine)
    fields.register("c", full)
    raw = msgspec.Raw(b"{}")
    await fields.dispatch(INFO, [FieldChange("a", "1", 0.0, raw, "x"), FieldChange("b", "1", 0.0, raw, "y")])
    assert seen == ["y"] and fields.failed == {"a": 1}
    with pytest.raises(StoreError):
        await fields.dispatch(INFO, [FieldChange("c", "1", 0.0, raw, "z")])


async def test_a_signed_change_reaches_its_handler_through_the_route(tmp_path: Path) -> None:
    async with running_daemon(mixed_config(tmp_path)) as (daemon, client):
        got: list[FieldChange] = []

        async def handler(info: NumberInfo, change: FieldChange) -> None:
            assert info.number == CLOUD
            got.append(change)

        daemon.cloud_fields.register("user_preferences", handler)
        body = corpus("pywa_user_marketing_preferences_resume.json")
        headers = {"X-Hub-Signature-256": signature(SECRET, body), "Content-Type": "application/json"}
        path = f"/webhooks/cloud/{CLOUD.lstrip('+')}"
        answer = await client.post(path, content=body, headers=headers)
        assert answer.status_code == 200
        assert [c.field for c in got] == ["user_preferences"]
        assert "user_preferences" in json.loads(bytes(got[0].value))
        # A change nobody here handles is still an authentic delivery: 200, counted.
        body = corpus("pywa_call_connect_user_initiated.json")
        headers["X-Hub-Signature-256"] = signature(SECRET, body)
        assert (await client.post(path, content=body, headers=headers)).status_code == 200
        assert daemon.cloud_fields.unhandled["calls"] == 1
