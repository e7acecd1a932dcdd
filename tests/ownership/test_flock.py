"""Ownership by flock: processes on one data root share the buckets; a dead one's are taken at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from dispatcher.ownership.flock import RECORD_SIZE, FlockOwnership, Holder, read_record
from dispatcher.ownership.interface import Owner
from tests.helpers.flock_holder import lock_path
from tests.helpers.http_servers import TEST_TIMEOUT
from tests.helpers.messages import wait_for
from tests.helpers.ownership import RecordingHost


def flock_ownership(root: Path, host: RecordingHost, owner_id: str, buckets: int = 4) -> FlockOwnership:
    return FlockOwnership(
        host=host,
        buckets=buckets,
        lock_path=lambda b: lock_path(root, b),
        members_dir=root / "members",
        owner_id=owner_id,
        address=f"http://127.0.0.1/{owner_id}",
        lane=f"lane://127.0.0.1:{7000 + ord(owner_id[0])}",
        poll_interval=0.05,
    )


async def test_a_lone_process_owns_every_bucket_and_bumps_each_epoch(tmp_path: Path) -> None:
    host = RecordingHost()
    one = flock_ownership(tmp_path, host, "a")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(one.run)
            assert host.epochs() == {0: 1, 1: 1, 2: 1, 3: 1}
            seen = one.owner(2)
            assert seen is not None and seen.owner_id == "a"
            one.stop()
    assert host.buckets == {}  # drained and let go at the end
    again = RecordingHost()
    two = flock_ownership(tmp_path, again, "b")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(two.run)
            assert again.epochs() == {0: 2, 1: 2, 2: 2, 3: 2}  # a new holder, a new epoch
            two.stop()


async def test_two_processes_balance_to_half_each_and_the_extras_are_drained_first(tmp_path: Path) -> None:
    first, second = RecordingHost(drain=0.05), RecordingHost()
    a = flock_ownership(tmp_path, first, "a")
    b = flock_ownership(tmp_path, second, "b")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            assert len(first.buckets) == 4
            await nursery.start(b.run)
            await wait_for(lambda: len(first.buckets) == 2 and len(second.buckets) == 2)
            assert set(first.buckets).isdisjoint(second.buckets)
            released = [bucket for what, bucket in first.events if what == "lost"]
            assert sorted(released) == sorted(second.buckets)
            assert all(second.epochs()[bucket] == 2 for bucket in released)
            # Everyone agrees who owns what (the forwarding view).
            await trio.sleep(0.2)
            for bucket in range(4):
                owner_a, owner_b = a.owner(bucket), b.owner(bucket)
                assert owner_a is not None and owner_a == owner_b
                # Its record names both ways in: forwarded requests go over its lane.
                name = owner_a.owner_id
                assert owner_a.address == f"http://127.0.0.1/{name}"
                assert owner_a.peer == owner_a.lane == f"lane://127.0.0.1:{7000 + ord(name[0])}"
            assert a.status()["live"] == 2 and a.status()["fair_share"] == 2
            b.stop()
            await wait_for(lambda: len(first.buckets) == 4)  # a clean exit: a takes them back
            a.stop()


def test_a_record_from_before_lanes_is_forwarded_to_over_http(tmp_path: Path) -> None:
    path = tmp_path / "bucket.lock"
    path.write_bytes(b'{"owner_id":"old","address":"http://10.0.0.1:9000","epoch":3}'.ljust(RECORD_SIZE))
    holder = read_record(path)
    assert holder == Holder(owner_id="old", address="http://10.0.0.1:9000", epoch=3, lane="")
    assert Owner(holder.owner_id, holder.address, holder.epoch, holder.lane).peer == "http://10.0.0.1:9000"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real process owning every bucket of ``tmp_path`` (killed at teardown if still alive)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.flock_holder", str(tmp_path), "4", "victim"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(5)]
        assert lines[-1] == "ready", lines
        assert sorted(lines[:4]) == [f"gained {b} 1" for b in range(4)]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_a_killed_process_s_buckets_are_taken_within_a_second(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    host = RecordingHost()
    survivor = flock_ownership(tmp_path, host, "survivor")
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(survivor.run)
            assert host.buckets == {}  # every bucket is the holder's (fair share 2, none free)
            owner = survivor.owner(0)
            assert owner is not None and owner.owner_id == "victim"
            os.kill(holder.pid, signal.SIGKILL)
            killed_at = trio.current_time()
            await wait_for(lambda: len(host.buckets) == 4, step=0.01)
            assert trio.current_time() - killed_at < 1.0
            assert host.epochs() == {0: 2, 1: 2, 2: 2, 3: 2}
            assert survivor.status()["live"] == 1  # the dead member's entry was removed
            assert not list((tmp_path / "members").glob("victim*"))
            survivor.stop()


async def test_a_process_that_owns_a_bucket_keeps_it_against_a_newcomer_s_claim(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """The kernel's lock decides: a newcomer cannot take a bucket the holder has not let go."""
    host = RecordingHost()
    newcomer = flock_ownership(tmp_path, host, "newcomer", buckets=4)
    assert newcomer._claim(0) is None
    holder.send_signal(signal.SIGTERM)  # a clean exit lets go of everything
    assert holder.wait(timeout=TEST_TIMEOUT) == 0
    assert newcomer._claim(0) == 2
