"""How the daemons of a cluster learn of the numbers onboarded on one of them: the shared data root's
started records (flock), read again every interval; or etcd's keys (a real 3-member etcd on
loopback, skipped when etcd is not installed), watched. Each calls back with every started
record whenever that set changes, and only then."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from dispatcher.core import onboarding_state as state
from dispatcher.core.onboarding_state import OnboardRecord
from dispatcher.ownership.etcd_client import EtcdClient
from dispatcher.service.roster_share import EtcdRoster, RootRoster
from tests.helpers.buckets import open_buckets
from tests.helpers.etcd import ETCD, MISSING, EtcdCluster, running_etcd
from tests.helpers.messages import wait_for

ACCOUNT = "AC" + "0" * 31 + "1"
WABA = "102290129340398"


def record(number: str, *steps: str, pnid: str = "1100") -> OnboardRecord:
    return OnboardRecord(
        number=number,
        account=ACCOUNT,
        waba_id=WABA,
        phone_number_id=pnid,
        done=dict.fromkeys(steps, 1.0),
    )


STARTED = (
    state.ADD,
    state.REQUEST_CODE,
    state.VERIFY,
    state.REGISTER,
    state.SUBSCRIBE,
    state.CHECK,
    state.START,
)


@attrs.define
class Applied:
    calls: list[list[str]] = attrs.Factory(list)
    records: list[OnboardRecord] = attrs.Factory(list)

    async def __call__(self, records: Sequence[OnboardRecord]) -> None:
        self.calls.append([r.number for r in records])
        self.records = list(records)


async def test_the_shared_root_gives_its_started_records_and_each_change_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_buckets(tmp_path / "root", 4) as buckets:
        one, two = "+15550780000", "+15550780001"
        await buckets.for_number(one).write(state.put(record(one, *STARTED)))
        await buckets.for_number(two).write(state.put(record(two, state.ADD, state.VERIFY)))  # not started
        applied = Applied()
        roster = RootRoster(buckets, interval=1.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(roster.run, applied)
            assert applied.calls == [[one]]  # before started(): the daemon claims buckets knowing it
            await trio.sleep(5)
            assert applied.calls == [[one]]  # nothing changed, nothing applied again
            await buckets.for_number(two).write(state.put(record(two, *STARTED)))
            await trio.sleep(1.5)
            assert applied.calls[-1] == [one, two]
            changed = record(one, *STARTED, pnid="2200")  # registered again under another id
            await buckets.for_number(one).write(state.put(changed))
            await trio.sleep(1.5)
            assert applied.records[0] == changed
            await buckets.for_number(two).write(state.delete(two))
            await trio.sleep(1.5)
            assert applied.calls[-1] == [one]
            assert len(applied.calls) == 4
            nursery.cancel_scope.cancel()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    if ETCD is None:
        pytest.skip(MISSING)
    with running_etcd(tmp_path / "etcd") as cluster:
        yield cluster


async def test_etcd_publishes_to_every_daemon_and_withdraws(etcd: EtcdCluster) -> None:
    one, two = "+15550780000", "+15550780001"
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as http, trio.open_nursery() as nursery:

        def roster(cluster: str = "test") -> EtcdRoster:
            client = EtcdClient(client=http, endpoints=etcd.endpoints, timeout=1.0)
            return EtcdRoster(client, cluster=cluster, interval=60.0, retry_delay=0.1)

        here, there, elsewhere = roster(), roster(), roster("other")
        await here.publish(record(one, *STARTED))
        seen, other = Applied(), Applied()
        await nursery.start(there.run, seen)
        await nursery.start(elsewhere.run, other)
        assert seen.calls == [[one]]  # what was published before it started: read at start
        await here.publish(record(two, *STARTED))
        await wait_for(lambda: seen.calls[-1] == [one, two], timeout=10.0)  # the watch, not the interval
        await here.publish(record(two, *STARTED, pnid="2200"))
        await wait_for(lambda: seen.records[-1].phone_number_id == "2200", timeout=10.0)
        await here.withdraw(one)
        await wait_for(lambda: seen.calls[-1] == [two], timeout=10.0)
        await here.withdraw(one)  # withdrawing what is gone is no error
        assert other.calls == [[]]  # another cluster's keys are not ours
        nursery.cancel_scope.cancel()


async def test_etcd_skips_a_record_it_cannot_decode_and_keeps_the_rest(etcd: EtcdCluster) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as http, trio.open_nursery() as nursery:
        client = EtcdClient(client=http, endpoints=etcd.endpoints, timeout=1.0)
        roster = EtcdRoster(client, cluster="test", interval=60.0, retry_delay=0.1)
        await client.put(b"/wadispatch/test/numbers/+15550789999", b"\xc1 not msgpack", 0)
        await roster.publish(record("+15550780000", *STARTED))
        seen = Applied()
        await nursery.start(roster.run, seen)
        assert seen.calls == [["+15550780000"]]
        nursery.cancel_scope.cancel()


async def test_etcd_unreachable_at_start_still_starts_and_catches_up(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """The daemon starts without etcd (it knows its own root's numbers); the records come once it answers."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http, trio.open_nursery() as nursery:
        endpoints = [*etcd.endpoints]
        for i in range(3):
            etcd.stop_member(i)
        roster = EtcdRoster(
            EtcdClient(client=http, endpoints=endpoints, timeout=0.3),
            cluster="test",
            interval=60.0,
            retry_delay=0.1,
        )
        seen = Applied()
        with trio.fail_after(10):
            await nursery.start(roster.run, seen)
        assert seen.calls == []
        for i in range(3):
            etcd.start_member(i)
        await trio.to_thread.run_sync(etcd.wait_healthy, 20.0)
        publisher = EtcdRoster(EtcdClient(client=http, endpoints=endpoints, timeout=2.0), cluster="test")
        await publisher.publish(record("+15550780000", *STARTED))
        await wait_for(lambda: seen.calls[-1:] == [["+15550780000"]], timeout=20.0)
        nursery.cancel_scope.cancel()
