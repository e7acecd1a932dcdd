"""The Messages resource over a data root of four buckets: each create, key, webhook and list
finds the bucket of its sender number (or of its sid), and a list merges them all."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import msgspec
import pytest

from dispatcher.config import ServiceConfig
from dispatcher.core import ledger
from dispatcher.core.bucketing import bucket_of, sid_slot
from dispatcher.core.buckets import Buckets
from dispatcher.core.directory import NumberInfo
from dispatcher.core.events import StatusEvent, WebhookEvents
from dispatcher.core.models import MessageRecord, record_encoder
from dispatcher.core.store import number_key
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.batch import BatchItem, accept_batch
from dispatcher.messages import listing
from dispatcher.messages.listing import Position
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.services import Services
from dispatcher.webhooks.inbox import Inbox
from tests.helpers.buckets import open_buckets
from tests.helpers.intake import Intake, build_intake

ACCOUNT: Final = "AC" + "0" * 31 + "1"
# One sender per bucket of four (bucket_of(n, 4) == index).
SENDERS: Final = ("+15550000008", "+15550000001", "+15550000002", "+15550000003")
TO: Final = "+15551234567"
SERVICE: Final = "MG" + "0" * 31 + "1"
T0: Final = 1_800_000_000.0


class Wall:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> float:
        return self.at


@pytest.fixture
async def buckets(tmp_path: Path) -> AsyncIterator[Buckets]:
    async with open_buckets(tmp_path / "data", 4) as opened:
        yield opened


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def intake(buckets: Buckets, wall: Wall) -> Intake:
    service = ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=list(SENDERS))
    return build_intake(
        buckets,
        numbers={n: NumberInfo(n, ACCOUNT, "s") for n in SENDERS},
        accounts={ACCOUNT: "token"},
        wall=wall,
        services=Services([service], buckets),
    )


def holding(buckets: Buckets, sid: str) -> list[int]:
    return [i for i, s in enumerate(buckets.stores) if s.get(b"messages", ledger.sid_key(sid)) is not None]


def test_the_senders_are_one_per_bucket() -> None:
    assert [bucket_of(n, 4) for n in SENDERS] == [0, 1, 2, 3]


async def test_a_create_is_stored_in_its_senders_bucket_and_its_sid_names_it(
    intake: Intake, buckets: Buckets
) -> None:
    for index, sender in enumerate(SENDERS):
        record = await intake.gateway.create(ACCOUNT, SendRequest(to=TO, from_=sender, body="hi"))
        assert holding(buckets, record.sid) == [index]
        assert sid_slot(record.sid) is not None and sid_slot(record.sid) & 3 == index  # type: ignore[operator]
        assert buckets.stores[index].count(b"outbox", number_key(sender)) == 1
        assert intake.gateway.fetch(ACCOUNT, record.sid).sid == record.sid
    assert [s.count(b"outbox", b"") for s in buckets.stores] == [1, 1, 1, 1]


async def test_an_idempotency_key_is_judged_in_the_bucket_of_the_sender(
    intake: Intake, buckets: Buckets
) -> None:
    req = SendRequest(to=TO, from_=SENDERS[3], body="once")
    first = await intake.gateway.create(ACCOUNT, req, idempotency_key="k-1")
    again = await intake.gateway.create(ACCOUNT, req, idempotency_key="k-1")
    assert again.sid == first.sid
    assert [s.entries(b"idem") for s in buckets.stores] == [0, 0, 0, 1]
    with pytest.raises(TwilioError) as conflict:
        await intake.gateway.create(
            ACCOUNT, SendRequest(to=TO, from_=SENDERS[3], body="other"), idempotency_key="k-1"
        )
    assert conflict.value.code == 20001


async def test_a_service_picks_one_sender_on_every_front_door_and_a_retry_replays(
    intake: Intake, buckets: Buckets, wall: Wall
) -> None:
    req = SendRequest(to=TO, from_=None, body="svc", messaging_service_sid=SERVICE)
    first = await intake.gateway.create(ACCOUNT, req, idempotency_key="svc-1")
    # Another front door (its own rules and services over the same buckets) decides alike.
    other = build_intake(
        buckets,
        numbers={n: NumberInfo(n, ACCOUNT, "s") for n in SENDERS},
        accounts={ACCOUNT: "token"},
        wall=wall,
        services=Services([ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=list(SENDERS))], buckets),
    )
    retried = await other.gateway.create(ACCOUNT, req, idempotency_key="svc-1")
    assert retried.sid == first.sid  # same sender, same bucket: the key replays
    for customer in (f"+1555123{i:04d}" for i in range(20)):
        one = intake.rules.validate(
            ACCOUNT, SendRequest(to=customer, from_=None, body="x", messaging_service_sid=SERVICE)
        )
        two = other.rules.validate(
            ACCOUNT, SendRequest(to=customer, from_=None, body="x", messaging_service_sid=SERVICE)
        )
        assert one.from_number == two.from_number


async def test_a_sticky_sender_is_read_from_the_buckets_of_the_pool_in_pool_order(buckets: Buckets) -> None:
    """Two stickies for one recipient (the pool changed in between): the first pool number's bucket wins,
    and a sticky naming a number of another bucket is no answer."""
    pool = ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=list(SENDERS))
    await buckets.stores[2].write(lambda txn: Services.remember(txn, SERVICE, TO, SENDERS[2]))
    await buckets.stores[3].write(lambda txn: Services.remember(txn, SERVICE, TO, SENDERS[3]))
    await buckets.stores[0].write(lambda txn: Services.remember(txn, SERVICE, TO, SENDERS[1]))  # misplaced
    assert Services([pool], buckets).sticky(pool, TO) == SENDERS[2]
    reordered = ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=[SENDERS[3], *SENDERS[:3]])
    assert Services([reordered], buckets).sticky(reordered, TO) == SENDERS[3]


async def test_a_list_merges_every_bucket_newest_first_and_its_tokens_page_across_them(
    intake: Intake, buckets: Buckets, wall: Wall
) -> None:
    rng = random.Random(14)
    created: list[MessageRecord] = []
    for _ in range(60):
        wall.at += rng.choice([0.0, 0.0005, 0.002, 1.0])  # ties in the same ms too: then by sid
        sender = rng.choice(SENDERS)
        created.append(await intake.gateway.create(ACCOUNT, SendRequest(to=TO, from_=sender, body="m")))
    newest_first = [
        r.sid for r in sorted(created, key=lambda r: (int(r.date_created * 1000), r.sid), reverse=True)
    ]
    assert {bucket_of(r.from_number, 4) for r in created} == {0, 1, 2, 3}

    forward: list[list[str]] = []
    query = listing.Query(page_size=7)
    while True:
        page = listing.read_page(buckets, ACCOUNT, query)
        forward.append([r.sid for r in page.records])
        if not page.has_next:
            break
        assert page.last is not None
        query = listing.Query(page_size=7, position=_reparsed(page.last))
    assert [sid for p in forward for sid in p] == newest_first
    assert [len(p) for p in forward] == [7] * 8 + [4]

    # Back from the last page with "previous" tokens: the same pages, in reverse.
    backward: list[list[str]] = []
    while page.first is not None and page.first.sid != newest_first[0]:
        page = listing.read_page(buckets, ACCOUNT, listing.Query(page_size=7, position=_reparsed(page.first)))
        backward.append([r.sid for r in page.records])
    assert backward == forward[-2::-1]

    # A filter across buckets: only one sender's, still in order.
    only = listing.read_page(buckets, ACCOUNT, listing.Query(from_=SENDERS[2], page_size=1000))
    assert [r.sid for r in only.records] == [
        s for s in newest_first if any(c.sid == s and c.from_number == SENDERS[2] for c in created)
    ]


def _reparsed(position: Position) -> Position:
    """Through the token text, as a client's next request carries it."""
    return listing.parse_query({"PageToken": [position.token()]}).position  # type: ignore[return-value]


async def test_a_batch_is_written_per_bucket_and_answered_in_order(intake: Intake, buckets: Buckets) -> None:
    items = [
        BatchItem(to=TO, from_=SENDERS[i % 4], body=f"b{i}")
        if i != 5
        else BatchItem(to=TO, from_="+19995550000", body="x")
        for i in range(12)
    ]
    answer = await accept_batch(intake.rules, intake.gateway, ACCOUNT, items)

    body = msgspec.json.decode(answer)
    assert body["accepted"] == 11 and body["rejected"] == 1
    results = body["results"]
    assert "error" in results[5] and results[5]["error"]["code"] == 63007
    for i, result in enumerate(results):
        if i != 5:
            assert holding(buckets, result["sid"]) == [i % 4]
    assert [s.count(b"outbox", b"") for s in buckets.stores] == [3, 2, 3, 3]


async def test_a_bucket_that_cannot_write_fails_its_items_alone(intake: Intake, buckets: Buckets) -> None:
    buckets.stores[1].close()  # its writer takes nothing more: StoreClosedError
    items = [BatchItem(to=TO, from_=SENDERS[i % 4], body=f"b{i}") for i in range(8)]

    body = msgspec.json.decode(await accept_batch(intake.rules, intake.gateway, ACCOUNT, items))
    assert body["accepted"] == 6 and body["rejected"] == 2
    for i, result in enumerate(body["results"]):
        if i % 4 == 1:
            assert result["error"]["code"] == 20503 and result["error"]["status"] == 503
        else:
            assert holding(buckets, result["sid"]) == [i % 4]
    assert buckets.stores[1].entries(b"messages") == 0
    with pytest.raises(TwilioError) as all_failed:
        await accept_batch(
            intake.rules, intake.gateway, ACCOUNT, [BatchItem(to=TO, from_=SENDERS[1], body="x")]
        )
    assert all_failed.value.status == 503 and all_failed.value.code == 20503


async def test_a_status_webhook_moves_the_message_in_its_numbers_bucket(
    intake: Intake, buckets: Buckets
) -> None:
    sender = SENDERS[3]
    record = await intake.gateway.create(ACCOUNT, SendRequest(to=TO, from_=sender, body="hi"))
    store = buckets.stores[3]
    await store.write(ledger.mark_sent(sender, 1, record.sid, "wamid.B3", T0))
    inbox = Inbox(buckets=buckets, wall=Wall(), public_url=lambda: "https://gw.example")
    info = NumberInfo(sender, ACCOUNT, "s")
    await inbox.apply(info, WebhookEvents(statuses=[StatusEvent(channel_id="wamid.B3", status="delivered")]))
    assert intake.gateway.fetch(ACCOUNT, record.sid).status == "delivered"


async def test_a_sid_from_before_slots_is_found_in_whichever_bucket_holds_it(tmp_path: Path) -> None:
    async with open_buckets(tmp_path / "data", 4) as opened:
        legacy = Buckets(opened.stores, slots_since_ms=int(T0 * 1000))
        # Minted by an older version: time first, then 80 random bits (here naming bucket 0).
        sid = f"SM{int(T0 * 1000) - 5:012x}" + "0000" + "7" * 16
        record = MessageRecord(sid=sid, account_sid=ACCOUNT, from_number=SENDERS[2], to_number=TO, body="old")
        await opened.stores[2].write(lambda txn: ledger.insert(txn, record))
        found = legacy.message(sid)
        assert found is not None and found[0] is opened.stores[2]
        assert opened.message(sid) is None  # without the record of when slots began: bucket 0 only
        assert record_encoder.encode(ledger.load(found[1])) == record_encoder.encode(record)
