"""Ownership through a real 3-member etcd cluster on loopback (skipped when etcd is not installed).

Owners run in-process (a RecordingHost shows what they were told) or as real processes
(``tests.helpers.etcd_holder``: they print a ``send`` line every 20 ms for each bucket whose
gate is open), so kill -9 and SIGSTOP are the real thing.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from actors.lease import SendLease
from dispatcher.ownership.etcd import EtcdOwnership
from dispatcher.ownership.etcd_client import EtcdClient
from tests.helpers.etcd import ETCD, MISSING, EtcdCluster, running_etcd
from tests.helpers.etcd_holder import TIMING
from tests.helpers.messages import wait_for
from tests.helpers.ownership import RecordingHost

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with running_etcd(tmp_path / "etcd") as cluster:
        yield cluster


@asynccontextmanager
async def owner(
    cluster: EtcdCluster, host: RecordingHost, owner_id: str, buckets: int = 4
) -> AsyncIterator[EtcdOwnership]:
    """An in-process owner with the holders' timing, running until the block ends."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http, trio.open_nursery() as nursery:
        ownership = EtcdOwnership(
            host=host,
            client=EtcdClient(client=http, endpoints=cluster.endpoints, timeout=0.5),
            cluster="test",
            buckets=buckets,
            owner_id=owner_id,
            address=f"http://127.0.0.1/{owner_id}",
            lane=f"lane://127.0.0.1:{7000 + len(owner_id)}",
            timing=TIMING,
            poll_interval=0.2,
            retry_delay=0.2,
        )
        await nursery.start(ownership.run)
        try:
            yield ownership
        finally:
            ownership.stop()


@attrs.define
class Holder:
    """A real owner process and what it printed: (kind, bucket, epoch, wall time)."""

    owner_id: str
    proc: subprocess.Popen[str]
    lines: list[tuple[str, int, int, float]] = attrs.Factory(list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts and parts[0] == "send":
                self.lines.append(("send", int(parts[1]), int(parts[2]), float(parts[3])))
            elif parts and parts[0] == "gained":
                self.lines.append(("gained", int(parts[1]), int(parts[2]), float(parts[3])))
            elif parts and parts[0] == "lost":
                self.lines.append(("lost", int(parts[1]), 0, float(parts[2])))

    def owned(self) -> set[int]:
        held: set[int] = set()
        for kind, bucket, _, _ in list(self.lines):
            if kind == "gained":
                held.add(bucket)
            elif kind == "lost":
                held.discard(bucket)
        return held

    def lost_since(self, since: float) -> set[int]:
        return {bucket for kind, bucket, _, at in list(self.lines) if kind == "lost" and at >= since}

    def sends(self, bucket: int) -> list[tuple[int, float]]:
        return [(epoch, at) for kind, b, epoch, at in list(self.lines) if kind == "send" and b == bucket]


@pytest.fixture
def holders(etcd: EtcdCluster) -> Iterator[dict[str, Holder]]:
    started: dict[str, Holder] = {}
    for owner_id in ("a", "b"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.etcd_holder", owner_id, "4", *etcd.endpoints],
            stdout=subprocess.PIPE,
            text=True,
        )
        holder = started[owner_id] = Holder(owner_id, proc)
        threading.Thread(target=holder.read, daemon=True).start()
    try:
        yield started
    finally:
        for holder in started.values():
            if holder.proc.poll() is None:
                os.kill(holder.proc.pid, signal.SIGCONT)
                holder.proc.kill()
            holder.proc.wait()


def assert_no_overlap(holders: dict[str, Holder], buckets: int = 4) -> None:
    """For every bucket, the sends of each (owner, epoch) lie in a time span no other's enters."""
    for bucket in range(buckets):
        spans = []
        for holder in holders.values():
            by_epoch: dict[int, list[float]] = {}
            for epoch, at in holder.sends(bucket):
                by_epoch.setdefault(epoch, []).append(at)
            spans += [(min(times), max(times), holder.owner_id, epoch) for epoch, times in by_epoch.items()]
        spans.sort()
        for before, after in itertools.pairwise(spans):
            assert before[1] < after[0], f"bucket {bucket}: {before} overlaps {after}"


def shut(gate: SendLease) -> bool:
    """No send may start through ``gate`` now."""
    return trio.current_time() >= gate.send_until()


async def test_claims_split_the_buckets_with_their_create_revision_as_epoch(etcd: EtcdCluster) -> None:
    first, second = RecordingHost(), RecordingHost()
    with trio.fail_after(30):
        async with owner(etcd, first, "one") as one:
            await wait_for(lambda: len(first.buckets) == 4)
            async with owner(etcd, second, "two") as two:
                await wait_for(lambda: len(first.buckets) == 2 and len(second.buckets) == 2, step=0.05)
                assert set(first.buckets).isdisjoint(second.buckets)
                moved = sorted(second.buckets)
                old_epochs = {b: e for what, b in first.events if what == "gained" for e in [0]}
                assert old_epochs  # one had every bucket before two came
                epochs = {**first.epochs(), **second.epochs()}
                assert len(set(epochs.values())) == 4  # every claim is its own revision
                await trio.sleep(0.5)
                for bucket in range(4):
                    seen_one, seen_two = one.owner(bucket), two.owner(bucket)
                    assert seen_one is not None and seen_one == seen_two
                    assert seen_one.epoch == epochs[bucket]
                    # Its record names both ways in: forwarded requests go over its lane.
                    name = seen_one.owner_id
                    assert seen_one.address == f"http://127.0.0.1/{name}"
                    assert seen_one.peer == seen_one.lane == f"lane://127.0.0.1:{7000 + len(name)}"
                assert one.status()["live"] == 2
            # two let go cleanly (deleted its keys): one takes them back at once, with newer epochs
            await wait_for(lambda: len(first.buckets) == 4, step=0.05)
            for bucket in moved:
                assert first.epochs()[bucket] > epochs[bucket]


async def test_a_killed_owner_s_buckets_send_again_within_ttl_and_grace(holders: dict[str, Holder]) -> None:
    a, b = holders["a"], holders["b"]
    with trio.fail_after(30):
        await wait_for(lambda: len(a.owned()) == 2 and len(b.owned()) == 2, step=0.05)
        await trio.sleep(0.5)
        victims = sorted(a.owned())
        a.proc.kill()
        killed = time.time()
        await wait_for(lambda: all(b.sends(v) and b.sends(v)[-1][1] > killed for v in victims), step=0.05)
    for bucket in victims:
        first_send = min(at for _, at in b.sends(bucket) if at > killed)
        gap = first_send - killed
        assert gap <= TIMING.ttl + TIMING.grace + 1.0, gap  # lease lapse + grace + the watch/poll
        gained = max(at for kind, bb, _, at in b.lines if kind == "gained" and bb == bucket)
        assert first_send - gained >= TIMING.grace - 0.05  # the new owner waited its grace
    assert_no_overlap(holders)


async def test_a_stopped_owner_sends_nothing_for_the_buckets_it_lost(holders: dict[str, Holder]) -> None:
    a, b = holders["a"], holders["b"]
    with trio.fail_after(40):
        await wait_for(lambda: len(a.owned()) == 2 and len(b.owned()) == 2, step=0.05)
        await trio.sleep(0.5)
        victims = sorted(a.owned())
        old_epochs = {bucket: a.sends(bucket)[-1][0] for bucket in victims}
        os.kill(a.proc.pid, signal.SIGSTOP)
        await trio.sleep(2 * TIMING.ttl)
        assert b.owned() >= set(victims)  # taken over while a slept
        os.kill(a.proc.pid, signal.SIGCONT)
        resumed = time.time()
        # a learns it lost them (it may win some back later, under a new epoch, after b lets go).
        await wait_for(lambda: set(victims) <= a.lost_since(resumed), step=0.05)
        await trio.sleep(1.0)
    for bucket in victims:
        late = [at for epoch, at in a.sends(bucket) if at >= resumed and epoch == old_epochs[bucket]]
        assert not late, f"a sent for bucket {bucket} under its old epoch after it woke up"
    assert_no_overlap(holders)


async def test_without_quorum_sends_stop_and_creates_have_no_owner_then_all_resumes(
    etcd: EtcdCluster,
) -> None:
    host = RecordingHost()
    with trio.fail_after(60):
        async with owner(etcd, host, "solo", buckets=2) as solo:
            await wait_for(lambda: len(host.buckets) == 2, step=0.05)
            await trio.sleep(TIMING.grace)
            gates = {bucket: gate for bucket, (_, gate) in host.buckets.items()}
            assert not any(shut(gate) for gate in gates.values())
            leader = etcd.leader()
            assert leader is not None
            followers = [i for i in range(3) if i != leader]
            for i in [*followers[:1], leader]:  # two of three gone: no quorum
                etcd.stop_member(i)
            lost_at = trio.current_time()
            await wait_for(lambda: all(shut(g) for g in gates.values()), step=0.02)
            closed_after = trio.current_time() - lost_at
            assert closed_after <= TIMING.send_window + 0.1
            assert solo.owner(0) is None and solo.owner(1) is None  # creates get 503
            assert solo.status()["healthy"] is False
            await wait_for(lambda: host.suspended == {0, 1}, step=0.02)  # the buckets take no writes
            await trio.sleep(2.0)
            for i in range(3):
                if etcd.procs[i] is None:
                    etcd.start_member(i)
            await wait_for(lambda: solo.owner(0) is not None and solo.owner(1) is not None, step=0.05)
            current = {bucket: gate for bucket, (_, gate) in host.buckets.items()}
            await wait_for(lambda: not any(shut(g) for g in current.values()), step=0.05)
            assert sorted(current) == [0, 1]
            if ("lost", 0) not in host.events:  # the lease held: the same claims, writable again
                await wait_for(lambda: not host.suspended, step=0.05)


class StallingKeepalives(EtcdClient):
    """An EtcdClient whose keepalives hang while ``stalled`` (as a stopped process's do)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.stalled = False
        self.unstalled = trio.Event()

    async def keepalive(self, lease_id: int) -> int:
        while self.stalled:
            await self.unstalled.wait()
        return await super().keepalive(lease_id)


async def test_a_lease_that_lapsed_while_suspended_is_not_resumed(etcd: EtcdCluster) -> None:
    """Seen in bench.cluster after SIGCONT: the window had closed (buckets suspended), then the first
    keepalive found the lease gone; the lapse woke the window loop like a renewal, and it resumed
    the buckets (writable under their old epochs) for the moment until the session ended. A lapse
    keeps them suspended until they are lost."""
    host = RecordingHost()
    with trio.fail_after(30):
        async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http, trio.open_nursery() as nursery:
            client = StallingKeepalives(client=http, endpoints=etcd.endpoints, timeout=0.5)
            solo = EtcdOwnership(
                host=host,
                client=client,
                cluster="test",
                buckets=2,
                owner_id="solo",
                address="http://127.0.0.1/solo",
                timing=TIMING,
                poll_interval=0.2,
                retry_delay=0.2,
            )
            await nursery.start(solo.run)
            try:
                await wait_for(lambda: len(host.buckets) == 2, step=0.05)
                lease = solo.status()["lease"]
                assert isinstance(lease, int)
                client.stalled = True
                await wait_for(lambda: host.suspended == {0, 1}, step=0.02)
                await EtcdClient(client=http, endpoints=etcd.endpoints, timeout=0.5).revoke(lease)
                client.stalled = False
                client.unstalled.set()
                await wait_for(lambda: ("lost", 0) in host.events and ("lost", 1) in host.events, step=0.05)
            finally:
                solo.stop()
    after = host.events[host.events.index(("suspended", 0)) :]
    assert not [event for event in after if event[0] == "resumed"], host.events
    assert solo.lease_losses == 1
