"""``wadispatch rebucket``: a root copied into another bucket count holds everything where its number
says, serves the same sids, lists and keys as before, and is refused while a daemon runs or when it
holds a record this version does not know."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
import trio
from twilio.rest import Client

from dispatcher.cli import main
from dispatcher.config import ServiceConfig
from dispatcher.core import callbacks, dataroot, ledger, outbox, sendmarks, window
from dispatcher.core.bucketing import bucket_of
from dispatcher.core.buckets import Buckets
from dispatcher.core.dataroot import DataRootBusyError, open_root
from dispatcher.core.directory import NumberInfo
from dispatcher.core.events import InboundEvent, StatusEvent, WebhookEvents
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store, number_key
from dispatcher.messages import listing
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.services import Services
from dispatcher.ops.rebucket import RebucketError, rebucket
from dispatcher.webhooks.inbox import Inbox
from tests.helpers.buckets import open_buckets
from tests.helpers.daemon import ACCOUNT, NUMBERS, TOKEN, messages_path, running_daemon, sandbox_config
from tests.helpers.intake import Intake, build_intake

SENDERS: Final = ("+15550000008", "+15550000001", "+15550000002", "+15550000003")  # buckets 0..3 of 4
SERVICE: Final = "MG" + "0" * 31 + "1"
CALLBACK: Final = "https://customer.example/status"


class Wall:
    def __init__(self) -> None:
        self.at = 1_800_000_000.0

    def now(self) -> float:
        self.at += 0.003
        return self.at


def intake_over(buckets: Buckets, wall: Wall) -> Intake:
    return build_intake(
        buckets,
        numbers={n: NumberInfo(n, ACCOUNT, "s", inbound_url="https://customer.example/in") for n in SENDERS},
        accounts={ACCOUNT: TOKEN},
        wall=wall,
        services=Services([ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=list(SENDERS))], buckets),
    )


async def fill(buckets: Buckets, wall: Wall) -> dict[str, object]:
    """Every kind of record a running daemon leaves: messages, outboxes, keys, statuses, inbound,
    callbacks, windows, stickies, scheduled, tokens, parked statuses."""
    intake = intake_over(buckets, wall)
    sids: list[str] = []
    for i in range(12):
        sender = SENDERS[i % 4]
        record = await intake.gateway.create(
            ACCOUNT,
            SendRequest(to=f"+1650555{i:04d}", from_=sender, body=f"m{i}", status_callback=CALLBACK),
            idempotency_key=f"key-{i}",
        )
        sids.append(record.sid)
    inbox = Inbox(buckets=buckets, wall=wall, public_url=lambda: "https://gw.example")
    for i, sender in enumerate(SENDERS):
        store = buckets.for_number(sender)
        await store.write(ledger.mark_sent(sender, 1, sids[i], f"wamid.{i}", wall.now()))
        await store.write(sendmarks.mark(sender, 2, wall.now()))  # a send under way (at-most-once)
        info = NumberInfo(sender, ACCOUNT, "s", inbound_url="https://customer.example/in")
        await inbox.apply(
            info,
            WebhookEvents(
                statuses=[
                    StatusEvent(channel_id=f"wamid.{i}", status="delivered"),
                    StatusEvent(channel_id=f"wamid.unknown.{i}", status="read"),  # parked: an orphan
                ],
                inbound=[
                    InboundEvent(
                        channel_id=f"in.{i}", sender="+16505550001", kind="text", timestamp=0.0, body="hi"
                    )
                ],
            ),
        )
        await store.write(lambda txn, n=sender: txn.put(b"tokens", number_key(n), b"token-of-" + n.encode()))
    service = await intake.gateway.create(
        ACCOUNT, SendRequest(to="+16505559999", from_=None, body="svc", messaging_service_sid=SERVICE)
    )
    return {"sids": sids, "service": service, "intake": intake}


def snapshot(buckets: Buckets) -> dict[str, object]:
    page = listing.read_page(buckets, ACCOUNT, listing.Query(page_size=1000))
    return {
        "listed": [(r.sid, r.status, r.direction) for r in page.records],
        "callbacks": sorted(
            (e.sid, e.kind, dict(e.params).get("MessageStatus", ""))
            for s in buckets.stores
            for _, v in s.scan(callbacks.DB, b"")
            for e in [callbacks.entry_decoder.decode(v)]
        ),
        "outbox": sorted((k, v) for s in buckets.stores for k, v in s.scan(b"outbox", b"")),
        # The outbox's views (core/outbox) move with it: its index by recipient and the depth.
        "by_recipient": sorted((k, v) for s in buckets.stores for k, v in s.scan(outbox.BY_RECIPIENT, b"")),
        "depths": {n: outbox.depth(buckets.for_number(n), n) for n in SENDERS},
        "views": all(s.get(b"meta", outbox.VIEWS_BUILT) is not None for s in buckets.stores),
        "started": {n: sendmarks.read(buckets.for_number(n), n) for n in SENDERS},
    }


async def test_a_root_rebucketed_from_4_to_2_and_to_8_keeps_everything_in_its_numbers_bucket(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    wall = Wall()
    async with open_buckets(data, 4) as before:
        filled = await fill(before, wall)
        expected = snapshot(before)
    for later, count in zip([(1, 2, 5), (1, 3, 9), (2, 2, 6)], (2, 8, 1), strict=True):
        report = rebucket(data, count)
        assert (report.old_count, report.new_count) == (4 if count == 2 else 2 if count == 8 else 8, count)
        assert report.moved_to.exists() and report.dropped == {}
        async with open_buckets(data, count) as after:
            assert snapshot(after) == expected
            for store_index, store in enumerate(after.stores):
                for sid, raw in store.scan(b"messages", b""):
                    record = ledger.load(raw)
                    ours = record.to_number if record.direction == "inbound" else record.from_number
                    assert bucket_of(ours, count) == store_index, sid
                for _, raw in store.scan(callbacks.DB, b""):
                    assert bucket_of(callbacks.entry_decoder.decode(raw).number, count) == store_index
            intake = intake_over(after, wall)
            for i, sid in enumerate(filled["sids"]):  # type: ignore[arg-type]
                assert intake.gateway.fetch(ACCOUNT, sid).sid == sid
                again = await intake.gateway.create(
                    ACCOUNT,
                    SendRequest(
                        to=f"+1650555{i:04d}", from_=SENDERS[i % 4], body=f"m{i}", status_callback=CALLBACK
                    ),
                    idempotency_key=f"key-{i}",
                )
                assert again.sid == sid  # the key found in the sender's new bucket
            for sender in SENDERS:
                store = after.for_number(sender)
                assert window.is_open(store, sender, "+16505550001", wall.now())
                assert store.get(b"tokens", number_key(sender)) == b"token-of-" + sender.encode()
            service = filled["service"]
            pool = ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=list(SENDERS))
            assert Services([pool], after).sticky(pool, "+16505559999") == service.from_number  # type: ignore[attr-defined]
            # The parked statuses moved with their number: a late send is matched.
            assert sum(s.count(b"meta", b"orphan\x00") for s in after.stores) == 4
            # New callbacks continue each bucket's sequences (none overwrites a copied one).
            sender, seq, which = SENDERS[later[0]], later[1], later[2]
            queued = after.for_number(sender).entries(callbacks.DB)
            sid = filled["sids"][which]  # type: ignore[index]
            await after.for_number(sender).write(
                ledger.mark_sent(sender, seq, sid, f"wamid.later.{count}", wall.now())
            )
            assert after.for_number(sender).entries(callbacks.DB) == queued + 1
            expected = snapshot(after)  # the next rebucket starts from here


async def test_rebucket_refuses_while_a_daemon_holds_the_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_buckets(data, 2):
        pass
    root = open_root(data)
    with dataroot.held(root), pytest.raises(DataRootBusyError, match="a daemon is running on it"):
        rebucket(data, 4)
    assert open_root(data).count == 2
    assert not (tmp_path / "data.rebucket-4").exists() or not any((tmp_path / "data.rebucket-4").iterdir())


async def test_a_record_this_version_does_not_know_is_refused_and_nothing_swapped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_buckets(data, 2) as buckets:
        await buckets.stores[1].write(lambda txn: txn.put(b"meta", b"someday\x00x", b"?"))
    with pytest.raises(RebucketError, match=r"meta key this version does not know: b'someday"):
        rebucket(data, 4)
    assert open_root(data).count == 2  # untouched
    with pytest.raises(RebucketError, match=r"data\.rebucket-4 exists \(left by an interrupted rebucket"):
        rebucket(data, 4)


@pytest.mark.parametrize(("count", "error"), [(3, "power of two"), (2, "has 2 bucket")])
async def test_a_bad_count_is_refused(tmp_path: Path, count: int, error: str) -> None:
    async with open_buckets(tmp_path / "data", 2):
        pass
    with pytest.raises(RebucketError, match=error):
        rebucket(tmp_path / "data", count)


async def test_a_daemons_data_dir_rebucketed_by_the_cli_serves_the_same_messages_and_sends_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older-style one-bucket root filled by a real daemon (messages left queued), split into four by
    ``wadispatch rebucket``, then served by a daemon on four buckets: the twilio SDK lists and fetches
    the same sids, the outboxes are sent, and each message sits in its sender's bucket."""
    data = tmp_path / "data"
    created: list[str] = []
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(data, rate=0.001, burst=1)) as (_, client):
            for i in range(9):
                resp = await client.post(
                    messages_path(),
                    data={
                        "To": f"whatsapp:+1650555{i:04d}",
                        "From": f"whatsapp:{NUMBERS[i % 3]}",
                        "Body": f"r{i}",
                    },
                    headers={"Idempotency-Key": f"cli-{i}"},
                )
                assert resp.status_code == 201
                created.append(resp.json()["sid"])
                await trio.sleep(0.002)
    config = tmp_path / "wadispatch.toml"
    config.write_text(f'[store]\ndata_dir = "{data}"\nmap_size_mb = 64\n')
    busy = open_root(data)
    with dataroot.held(busy):
        assert main(["rebucket", "--config", str(config), "--buckets", "4"]) == 3
    assert "refused: data root" in capsys.readouterr().err
    assert main(["rebucket", "--config", str(config), "--buckets", "4"]) == 0
    out = capsys.readouterr().out
    assert "1 -> 4 buckets" in out and "Set [store] buckets = 4" in out
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(data, buckets=4)) as (running, client):
            for sid in created:  # the queued ones are sent now, from their new buckets
                while (await client.get(messages_path(sid))).json()["status"] in ("queued", "sending"):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            retried = await client.post(
                messages_path(),
                data={"To": "whatsapp:+16505550004", "From": f"whatsapp:{NUMBERS[1]}", "Body": "r4"},
                headers={"Idempotency-Key": "cli-4"},
            )
            assert retried.json()["sid"] == created[4]
            for sid in created:
                number = (await client.get(messages_path(sid))).json()["from"].removeprefix("whatsapp:")
                assert running.buckets.stores[bucket_of(number, 4)].get(b"messages", sid.encode()) is not None

            def use_sdk() -> list[str]:
                api = Client(ACCOUNT, TOKEN)
                api.api.base_url = running.url
                return [m.sid for m in api.messages.list(page_size=4)]

            assert await trio.to_thread.run_sync(use_sdk) == created[::-1]


async def test_an_older_data_dir_is_split_and_its_sids_without_slots_still_found(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = Store(data, map_size=1 << 20, commit_in_thread=False)  # a data dir from before buckets
    sid = "SM" + "0123456789ab" + "ffff" + "0" * 16  # random digits where the slot goes
    record = MessageRecord(
        sid=sid, account_sid=ACCOUNT, from_number=SENDERS[2], to_number="+16505551234", body="old"
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(old.run_writer)
        await old.write(lambda txn: ledger.insert(txn, record))
        old.close()
    old.close_env()
    report = rebucket(data, 4)
    assert report.copied["messages"] == 1 and report.old_count == 1
    async with open_buckets(data, 4) as after:
        assert after.stores[2].get(b"messages", sid.encode()) is not None  # its sender's bucket
        found = after.message(sid)  # although its digits name bucket 3: it predates slots
        assert found is not None and found[0] is after.stores[2]
