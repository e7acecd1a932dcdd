"""Account webhooks applied live to a running Cloud actor (MockClock): a raised tier admits the
recipients waiting for it at once, a throughput upgrade speeds the bucket, a restriction pauses
(per config) and its lifting resumes; all of it kept in LMDB. Payloads are Meta's and pywa's
(tests/corpus/cloud, with ``_source``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dispatcher.channels import account_webhook as aw
from dispatcher.core import number_watch
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store
from dispatcher.webhooks.account import AccountWatch, Pace, WatchedNumber
from tests.helpers import messages
from tests.helpers.actors import NUMBER, cloud_actor, submit
from tests.helpers.messages import record_of

CORPUS = Path(__file__).parents[1] / "corpus" / "cloud"
WABA = "102290129340398"
PACE = Pace(rate=80.0, burst=80, upgraded_rate=1000.0, upgraded_burst=1000)
OTHER = "+15550000002"
wait_for = functools.partial(messages.wait_for, timeout=3 * 86_400.0)


def change(name: str, **display: str) -> tuple[str, str, bytes]:
    """``(waba, field, value)`` of a corpus file's only change; ``display`` renames its number."""
    doc: dict[str, Any] = json.loads((CORPUS / name).read_text())
    assert doc.pop("_source")
    entry = doc["entry"][0]
    item = entry["changes"][0]
    value = {**item["value"], **display}
    return entry["id"], item["field"], json.dumps(value).encode()


def ours(number: str = NUMBER) -> str:
    return number.lstrip("+")


def watch_of(
    store: Store, *numbers: str, pause_on: tuple[str, ...] = (), actors: dict[str, Any] | None = None
) -> AccountWatch:
    listed = [WatchedNumber(n, WABA, PACE) for n in numbers]
    return AccountWatch(
        buckets=Buckets.single(store),
        wall=TrioWallClock(start=1_700_000_000.0),
        numbers=lambda: listed,
        actor=lambda n: (actors or {}).get(n),
        pause_on=pause_on,
    )


async def test_a_raised_tier_admits_the_waiting_recipients_at_once(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    actor, api = cloud_actor(writer, limit=250, wall=wall)
    actor.set_tier_limit(2)
    await nursery.start(actor.run)
    records = [await submit(writer, actor, f"+155520000{i:02d}") for i in range(3)]
    await wait_for(lambda: len(api.sent) == 2)
    await trio.sleep(60.0)
    assert record_of(writer, records[2].sid).status == "queued"  # waits for the 24 h window
    watch = watch_of(writer, NUMBER, actors={NUMBER: actor})
    waba, field, value = change("meta_docs_quality_messaging_limit.json", display_phone_number=ours())
    start = trio.current_time()
    applied = await watch.apply(NUMBER, waba, field, value)
    assert applied is not None and applied.numbers == (NUMBER,) and applied.event == "ONBOARDING"
    await wait_for(lambda: len(api.sent) == 3)
    assert trio.current_time() - start < 1.0
    assert actor.statistics().tier_limit == 2000
    stored = number_watch.load(writer, NUMBER)
    assert stored.messaging_tier == "TIER_2K" and stored.last_event == f"{field}:ONBOARDING"
    assert watch.applied == {f"{field}:ONBOARDING": 1}


async def test_a_throughput_upgrade_speeds_the_bucket_and_keeps_the_tier(writer: Store) -> None:
    actor, _ = cloud_actor(writer, limit=250)
    watch = watch_of(writer, NUMBER, actors={NUMBER: actor})
    waba, field, value = change("meta_docs_quality_throughput_upgrade.json", display_phone_number=ours())
    await watch.apply(NUMBER, waba, field, value)
    # Meta's TIER_UNLIMITED here is the throughput level, not a messaging limit.
    assert (actor.bucket.rate, actor.bucket.burst) == (1000.0, 1000)
    assert actor.statistics().tier_limit == 250
    assert number_watch.load(writer, NUMBER).throughput_level == "HIGH"


async def test_a_quality_update_names_its_number_and_no_other(writer: Store) -> None:
    mine, _ = cloud_actor(writer, limit=250)
    watch = watch_of(writer, NUMBER, OTHER, actors={NUMBER: mine})
    waba, field, value = change("meta_docs_quality_messaging_limit.json", display_phone_number=ours(OTHER))
    applied = await watch.apply(NUMBER, waba, field, value)  # received on our route, about the other
    assert applied is not None and applied.numbers == (OTHER,)
    assert mine.statistics().tier_limit == 250
    assert number_watch.load(writer, OTHER).messaging_tier == "TIER_2K"
    assert number_watch.load(writer, NUMBER) == number_watch.UNKNOWN


async def test_a_capability_update_as_meta_writes_it_applies_to_the_wabas_numbers(writer: Store) -> None:
    actor, _ = cloud_actor(writer, limit=250)
    watch = watch_of(writer, NUMBER, actors={NUMBER: actor})
    _, field, value = change("meta_docs_business_capability_update.json")
    await watch.apply(NUMBER, WABA, field, value)  # 2000 as an integer, in Meta's example
    assert actor.statistics().tier_limit == 2000
    unlimited = json.dumps({"max_daily_conversation_per_phone": -1}).encode()
    await watch.apply(NUMBER, WABA, field, unlimited)
    assert actor.statistics().tier_limit is None
    assert number_watch.load(writer, NUMBER).messaging_tier == "TIER_UNLIMITED"


async def test_an_account_change_of_another_waba_reaches_only_the_receiving_number(writer: Store) -> None:
    watch = watch_of(writer, NUMBER, OTHER)
    _, field, value = change("pywa_account_update_account_violation.json")
    applied = await watch.apply(NUMBER, "999", field, value)
    assert applied is not None and applied.numbers == (NUMBER,)


async def test_a_restriction_pauses_when_configured_and_its_lifting_resumes(writer: Store) -> None:
    actor, _ = cloud_actor(writer)
    watch = watch_of(writer, NUMBER, pause_on=("restricted", "disabled"), actors={NUMBER: actor})
    waba, field, value = change("pywa_account_update_account_restriction.json")
    restriction = json.loads(value)
    for item in restriction["restriction_info"]:
        item["expiration"] = 1_900_000_000  # still in force at the test's clock
    await watch.apply(NUMBER, waba, field, json.dumps(restriction).encode())
    assert actor.paused
    stored = number_watch.load(writer, NUMBER)
    assert stored.paused_by_watch and stored.problems(1_700_000_000.0) == ["restricted"]
    assert stored.restrictions == ["RESTRICTED_ADD_PHONE_NUMBER_ACTION", "RESTRICTED_BIZ_INITIATED_MESSAGING"]
    waba, field, value = change("pywa_account_update_account_disabled.json")  # REINSTATE
    await watch.apply(NUMBER, waba, field, value)
    assert not actor.paused
    assert number_watch.load(writer, NUMBER).problems(1_700_000_000.0) == []


async def test_an_operators_pause_outlives_metas_all_clear(writer: Store) -> None:
    actor, _ = cloud_actor(writer)
    actor.pause()
    watch = watch_of(writer, NUMBER, pause_on=("disabled",), actors={NUMBER: actor})
    waba, field, value = change("pywa_account_update_account_reconnected.json")
    await watch.apply(NUMBER, waba, field, value)
    assert actor.paused


async def test_problems_are_reported_without_pausing_by_default(writer: Store) -> None:
    actor, _ = cloud_actor(writer)
    watch = watch_of(writer, NUMBER, actors={NUMBER: actor})
    waba, field, value = change("pywa_account_update_account_offboarded.json")
    await watch.apply(NUMBER, waba, field, value)
    assert not actor.paused
    assert number_watch.load(writer, NUMBER).problems(0.0) == ["disabled"]
    waba, field, value = change("pywa_account_update_account_reconnected.json")
    await watch.apply(NUMBER, waba, field, value)
    assert number_watch.load(writer, NUMBER).problems(0.0) == []


async def test_a_name_review_is_kept(writer: Store) -> None:
    watch = watch_of(writer, NUMBER)
    waba, field, value = change("meta_docs_name_update_approved.json", display_phone_number=ours())
    await watch.apply(NUMBER, waba, field, value)
    stored = number_watch.load(writer, NUMBER)
    assert (stored.name_decision, stored.verified_name) == ("APPROVED", "Lucky Shrub")


async def test_a_legacy_flag_is_a_problem_and_unflag_clears_it(writer: Store) -> None:
    actor, _ = cloud_actor(writer)
    watch = watch_of(writer, NUMBER, pause_on=("flagged",), actors={NUMBER: actor})
    flagged = {"display_phone_number": ours(), "event": "FLAGGED", "current_limit": "TIER_10K"}
    await watch.apply(NUMBER, WABA, aw.QUALITY_FIELD, json.dumps(flagged).encode())
    assert actor.paused and actor.statistics().tier_limit == 10_000
    unflagged = {"display_phone_number": ours(), "event": "UNFLAGGED", "current_limit": "TIER_10K"}
    await watch.apply(NUMBER, WABA, aw.QUALITY_FIELD, json.dumps(unflagged).encode())
    assert not actor.paused


@pytest.mark.parametrize(
    "value",
    [b"[]", b'"x"', b'{"event": 3}', b'{"display_phone_number": 15550783881}', b"{not json"],
)
async def test_an_unreadable_change_is_counted_and_changes_nothing(writer: Store, value: bytes) -> None:
    watch = watch_of(writer, NUMBER)
    field = aw.ACCOUNT_FIELD if b"event" in value else aw.QUALITY_FIELD
    assert await watch.apply(NUMBER, WABA, field, value) is None
    assert watch.unapplied == 1
    assert number_watch.load(writer, NUMBER) == number_watch.UNKNOWN


async def test_unknown_names_meta_may_add_decode_and_change_no_limit(writer: Store) -> None:
    actor, _ = cloud_actor(writer, limit=250)
    watch = watch_of(writer, NUMBER, actors={NUMBER: actor})
    future = {
        "display_phone_number": ours(),
        "event": "SOMETHING_NEW",
        "max_daily_conversations_per_business": "TIER_1M",
    }
    applied = await watch.apply(NUMBER, WABA, aw.QUALITY_FIELD, json.dumps(future).encode())
    assert applied is not None and applied.event == "SOMETHING_NEW"
    assert actor.statistics().tier_limit == 250


def test_every_account_field_of_the_corpus_decodes() -> None:
    seen: set[str] = set()
    for path in sorted(CORPUS.glob("*.json")):
        doc = json.loads(path.read_text())
        for entry in doc["entry"]:
            for item in entry["changes"]:
                if item["field"] in aw.FIELDS:
                    aw.decode(item["field"], json.dumps(item["value"]).encode())
                    seen.add(item["field"])
    assert seen == set(aw.FIELDS)
