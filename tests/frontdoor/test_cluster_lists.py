"""A list gathered across daemons that do not share a data root.

Three daemons, each with a root of its own: A has buckets 0 and 1 attached, B bucket 2, C
bucket 3; the copies of the other buckets in each root are stale (one holds a decoy record
that must never be listed). Every page a daemon gathers, following its tokens forward and
back, with or without filters, must be the page one root holding every bucket gives; and
when a bucket's messages cannot be had, the list is a 503 with Retry-After, never a page
silently missing them. The owners answer as the front door's list route does (``part``).
"""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlencode

import attrs
import msgspec
import pytest
import trio

from actors.transport import ConnectError, Response
from dispatcher.config import ServiceConfig
from dispatcher.core import ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.cluster_lists import (
    MAX_PART,
    PART_HEADER,
    ClusterLists,
    ListUnavailable,
    encode_part,
)
from dispatcher.frontdoor.forwarding import HOP_HEADER, Headers
from dispatcher.messages import listing
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.services import Services
from dispatcher.ownership.interface import Owner
from tests.helpers.buckets import FixedOwners, open_buckets
from tests.helpers.intake import build_intake

ACCOUNT: Final = "AC" + "0" * 31 + "1"
AUTH: Final = "Basic " + base64.b64encode(f"{ACCOUNT}:token".encode()).decode()
SENDERS: Final = ("+15550000008", "+15550000001", "+15550000002", "+15550000003")  # buckets 0..3
TO: Final = ("+15551234567", "+15557654321")
T0: Final = 1_800_000_000.0
OWNERS: Final = {
    "A": Owner("A", "http://a", 1),
    "B": Owner("B", "http://b", 1),
    "C": Owner("C", "http://c", 1),
}
ATTACHED: Final = {"A": (0, 1), "B": (2,), "C": (3,)}
PATH: Final = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


class Wall:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> float:
        return self.at


@attrs.define
class Daemon:
    name: str
    buckets: Buckets  # its own root's: live where attached, stale elsewhere
    lists: ClusterLists


@attrs.define
class Peers:
    """The daemons' list routes, as another daemon's ``PeerPool`` reaches them."""

    daemons: dict[str, Daemon] = attrs.Factory(dict)
    asked: list[tuple[str, bytes, dict[bytes, bytes]]] = attrs.Factory(list)
    down: set[str] = attrs.Factory(set)
    hang: set[str] = attrs.Factory(set)
    garbled: set[str] = attrs.Factory(set)

    async def request(
        self, address: str, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> Response:
        seen = {name.lower(): value for name, value in headers}
        self.asked.append((address, target, seen))
        daemon = next(d for d in self.daemons.values() if OWNERS[d.name].address == address)
        if daemon.name in self.down:
            raise ConnectError("connection refused")
        if daemon.name in self.hang:
            await trio.sleep_forever()
        if daemon.name in self.garbled:
            return Response(200, [], b"\xc1 not msgpack")
        assert method == b"GET" and body == b""
        return part(daemon, target, seen)


def part(daemon: Daemon, target: bytes, headers: dict[bytes, bytes]) -> Response:
    """What the front door's list route answers a part request (``app.list_messages``)."""
    assert headers[b"authorization"] == AUTH.encode()  # the client's own credentials, checked there
    assert HOP_HEADER in headers  # never forwarded or fanned out again
    path, _, query_string = target.partition(b"?")
    assert path.decode() == PATH
    params = parse_qs(query_string.decode(), keep_blank_values=True)
    try:
        indexes = daemon.lists.part_buckets(headers[PART_HEADER.encode()].decode())
        records = listing.read_part(daemon.buckets, ACCOUNT, listing.parse_query(params), indexes)
    except TwilioError as exc:
        return Response(exc.status, [(b"content-type", b"application/json")], exc.body())
    return Response(200, [], encode_part(records))


@attrs.define
class World:
    whole: Buckets  # every bucket's live store: what one daemon holding them all would list
    created: list[MessageRecord]
    peers: Peers
    table: dict[int, Owner | None]

    def daemon(self, name: str) -> Daemon:
        return self.peers.daemons[name]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with (
        open_buckets(tmp_path / "live", 4) as live,
        open_buckets(tmp_path / "a", 4) as a,
        open_buckets(tmp_path / "b", 4) as b,
        open_buckets(tmp_path / "c", 4) as c,
    ):
        wall = Wall()
        service = ServiceConfig(sid="MG" + "0" * 31 + "1", account=ACCOUNT, numbers=list(SENDERS))
        intake = build_intake(
            live,
            numbers={n: NumberInfo(n, ACCOUNT, "s") for n in SENDERS},
            accounts={ACCOUNT: "token"},
            wall=wall,
            services=Services([service], live),
        )
        rng = random.Random(1414)
        created = []
        for i in range(90):
            wall.at += rng.choice([0.0, 0.0004, 0.003, 1.0, 86400.0])  # same-ms ties, other days
            request = SendRequest(to=rng.choice(TO), from_=rng.choice(SENDERS), body=f"m{i}")
            created.append(await intake.gateway.create(ACCOUNT, request))
        # A stale copy of bucket 2 in A's root (say, from before the bucket moved): never listed.
        decoy = MessageRecord(
            sid=new_sid("SM", 2), account_sid=ACCOUNT, from_number=SENDERS[2], to_number=TO[0], body="stale"
        )
        await a.stores[2].write(lambda txn: ledger.insert(txn, decoy))
        table: dict[int, Owner | None] = {0: OWNERS["A"], 1: OWNERS["A"], 2: OWNERS["B"], 3: OWNERS["C"]}
        peers = Peers()
        for name, root in (("A", a), ("B", b), ("C", c)):
            stores = [live.stores[i] if i in ATTACHED[name] else root.stores[i] for i in range(4)]
            attached = ATTACHED[name]
            lists = ClusterLists(
                count=4,
                owners=FixedOwners(table, owner_id=name),
                here=lambda i, attached=attached: i in attached,  # type: ignore[misc]
                pool=peers,
                timeout=5.0,
                retry_after=2,
            )
            peers.daemons[name] = Daemon(name, Buckets(stores), lists)
        yield World(live, created, peers, table)


async def gathered_page(daemon: Daemon, params: dict[str, str]) -> listing.Page:
    """The page ``daemon``'s list route gives for ``params`` (a client's query)."""
    query = listing.parse_query({k: [v] for k, v in params.items()})
    target = (PATH + "?" + urlencode(params)).encode()  # as a client sends it
    gathered = await daemon.lists.gather(query, target, AUTH)
    return listing.read_page(daemon.buckets, ACCOUNT, query, local=gathered.local, parts=gathered.parts)


def whole_page(world: World, params: dict[str, str]) -> listing.Page:
    return listing.read_page(world.whole, ACCOUNT, listing.parse_query({k: [v] for k, v in params.items()}))


def sids(page: listing.Page) -> list[str]:
    return [r.sid for r in page.records]


async def test_every_daemon_lists_every_bucket_newest_first_and_pages_as_one_root_would(world: World) -> None:
    newest_first = [
        r.sid for r in sorted(world.created, key=lambda r: (int(r.date_created * 1000), r.sid), reverse=True)
    ]
    for name in "ABC":
        pages: list[list[str]] = []
        params = {"PageSize": "8"}
        while True:
            page = await gathered_page(world.daemon(name), params)
            assert sids(page) == sids(whole_page(world, params))
            pages.append(sids(page))
            if not page.has_next:
                break
            assert page.last is not None
            params = {"PageSize": "8", "PageToken": page.last.token()}
        assert [sid for p in pages for sid in p] == newest_first, name
        # Back with the "previous" tokens: the same pages in reverse.
        back: list[list[str]] = []
        while page.first is not None and page.first.sid != newest_first[0]:
            params = {"PageSize": "8", "PageToken": page.first.token()}
            page = await gathered_page(world.daemon(name), params)
            back.append(sids(page))
        assert back == pages[-2::-1], name


async def test_filters_page_numbers_and_tokens_agree_with_one_root_whichever_daemon_is_asked(
    world: World,
) -> None:
    rng = random.Random(7)
    days = sorted({r.date_sent or r.date_created for r in world.created})
    tokens = [
        None,
        *(listing.Position(int(r.date_created * 1000), r.sid, rng.random() < 0.5) for r in world.created),
    ]
    for _ in range(250):
        params = {"PageSize": str(rng.choice([1, 2, 5, 13, 50, 1000]))}
        if rng.random() < 0.4:
            params["From"] = "whatsapp:" + rng.choice(SENDERS)
        if rng.random() < 0.3:
            params["To"] = rng.choice(TO)
        if rng.random() < 0.2:
            params["DateSent>"] = _day(rng.choice(days))
        if (token := rng.choice(tokens)) is not None:
            params["PageToken"] = token.token()
            params["Page"] = "1"
        elif rng.random() < 0.3:
            params["Page"] = str(rng.randint(1, 4))  # a hand-built URL: the earlier pages skipped
        daemon = world.daemon(rng.choice("ABC"))
        got, want = await gathered_page(daemon, params), whole_page(world, params)
        assert (sids(got), got.has_next, got.first, got.last) == (
            sids(want),
            want.has_next,
            want.first,
            want.last,
        ), params


async def test_each_owner_is_asked_once_for_its_buckets_with_the_clients_query_and_credentials(
    world: World,
) -> None:
    page = await gathered_page(world.daemon("A"), {"PageSize": "5", "From": "whatsapp:" + SENDERS[2]})
    assert {r.from_number for r in page.records} == {SENDERS[2]}
    asked = {address: headers[PART_HEADER.encode()] for address, _, headers in world.peers.asked}
    assert asked == {"http://b": b"2", "http://c": b"3"}  # A read 0 and 1 itself
    assert all(b"From=whatsapp%3A%2B15550000002" in target for _, target, _ in world.peers.asked)
    assert "stale" not in {r.body for r in page.records}


async def test_a_stale_copy_of_a_bucket_owned_elsewhere_is_never_listed(world: World) -> None:
    for name in "ABC":
        page = await gathered_page(world.daemon(name), {"PageSize": "1000"})
        assert len(page.records) == len(world.created)
        assert "stale" not in {r.body for r in page.records}


async def test_a_bucket_without_an_owner_makes_the_list_a_503_with_retry_after(world: World) -> None:
    world.table[3] = None
    with pytest.raises(ListUnavailable) as refused:
        await gathered_page(world.daemon("A"), {})
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, 20503, 2)
    assert "bucket(s) 3 have no owner" in refused.value.message
    assert world.peers.asked == []  # nothing asked: the answer could not be whole anyway


async def test_an_owner_that_cannot_be_reached_makes_the_list_a_503_naming_its_buckets(world: World) -> None:
    world.peers.down.add("B")
    with pytest.raises(ListUnavailable) as refused:
        await gathered_page(world.daemon("C"), {})
    assert refused.value.status == 503
    assert "owning bucket(s) 2 did not answer" in refused.value.message  # A answered for 0 and 1


async def test_an_owner_that_hangs_is_given_up_after_the_timeout(
    world: World, autojump_clock: object
) -> None:
    world.peers.hang.add("C")
    start = trio.current_time()
    with pytest.raises(ListUnavailable, match=r"bucket\(s\) 3 did not answer"):
        await gathered_page(world.daemon("B"), {})
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_an_owner_asked_for_a_bucket_it_no_longer_holds_refuses_and_the_list_is_a_503(
    world: World,
) -> None:
    world.table[1] = OWNERS["B"]  # C's table says B took bucket 1; B has not attached it
    with pytest.raises(ListUnavailable, match=r"owning bucket\(s\) 1, 2 did not answer"):
        await gathered_page(world.daemon("C"), {})
    with pytest.raises(ListUnavailable, match=r"bucket\(s\) 1 are not owned by this daemon"):
        world.daemon("B").lists.part_buckets("1,2")


@pytest.mark.parametrize("header", ["", "x", "1,,2", "4", "-1", "0,99999999999999999999"])
async def test_a_malformed_part_header_is_a_400(world: World, header: str) -> None:
    with pytest.raises(TwilioError) as refused:
        world.daemon("A").lists.part_buckets(header)
    assert (refused.value.status, refused.value.code) == (400, 20001)


async def test_a_page_number_too_deep_to_gather_is_a_400_naming_the_token_way(world: World) -> None:
    page_size = 1000
    deep = MAX_PART // page_size  # its earlier pages and itself: past what a part carries
    with pytest.raises(TwilioError, match="follow next_page_uri") as refused:
        await gathered_page(world.daemon("A"), {"PageSize": str(page_size), "Page": str(deep)})
    assert refused.value.status == 400
    assert world.peers.asked == []


async def test_a_part_answer_that_does_not_decode_is_a_503(world: World) -> None:
    world.peers.garbled.add("B")
    with pytest.raises(ListUnavailable, match=r"owning bucket\(s\) 2 did not answer"):
        await gathered_page(world.daemon("A"), {})


def test_a_part_round_trips_records_whole() -> None:
    record = MessageRecord(
        sid=new_sid("SM", 3), account_sid=ACCOUNT, from_number=SENDERS[3], to_number=TO[1], body="héllo"
    )
    decoded = msgspec.msgpack.decode(encode_part([record]), type=dict[str, list[MessageRecord]])
    assert decoded == {"records": [record]}


def _day(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).date().isoformat()
