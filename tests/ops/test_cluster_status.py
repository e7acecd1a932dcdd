"""The cluster view: every daemon owning buckets with what it owns and its own status, gathered from
the others over HTTP; unreachable and unowned named. Against real daemons' admin APIs."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio

from dispatcher.frontdoor.forwarding import PeerPool, status_asker
from dispatcher.ops.cluster import ClusterStatus, ClusterView
from dispatcher.ops.operations import Status
from dispatcher.ownership.interface import Owner
from tests.helpers.buckets import FixedOwners
from tests.helpers.cli import cli
from tests.helpers.daemon import ADMIN, ADMIN_SECTION, ADMIN_TOKEN, running_daemon, sandbox_config


def local() -> Status:
    return Status(numbers=[], store_commits=7, store_queued=2)


async def test_the_view_gathers_each_owner_and_names_the_unreachable_and_the_unowned(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "b", extra=ADMIN_SECTION)) as (peer, _):
            pool = PeerPool()
            owners = FixedOwners(
                {
                    0: Owner("A", "http://a.invalid", 1),
                    1: Owner("B", peer.url, 4),
                    2: Owner("B", peer.url, 4),
                    3: None,
                    4: Owner("C", "http://127.0.0.1:9", 2),  # nobody listens there
                }
            )
            view = ClusterView(count=5, owners=owners, local=local, ask=status_asker(pool, ADMIN_TOKEN, "A"))
            try:
                found = await view.status()
            finally:
                await pool.aclose()
    assert found.buckets == 5 and found.unowned == [3]
    assert [(d.owner_id, d.buckets, d.here, d.reachable) for d in found.daemons] == [
        ("A", [0], True, True),
        ("B", [1, 2], False, True),
        ("C", [4], False, False),
    ]
    b = found.daemons[1].status
    assert b is not None and sorted(n.number for n in b.numbers) == [
        "+15550000001",
        "+15550000002",
        "+15550000003",
    ]
    assert found.numbers == 3 and found.store_queued == 2 + b.store_queued
    assert found.daemons[2].error and found.daemons[2].status is None


async def test_an_owner_that_does_not_answer_in_time_is_listed_as_such(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(address: str) -> Status:
        await trio.sleep_forever()
        raise AssertionError

    owners = FixedOwners({0: Owner("A", "", 1), 1: Owner("B", "http://b", 1)})
    view = ClusterView(count=2, owners=owners, local=local, ask=silent)
    found = await view.status(timeout=2.0)
    assert trio.current_time() == pytest.approx(2.0)
    assert [(d.owner_id, d.reachable, d.error) for d in found.daemons] == [
        ("A", True, None),
        ("B", False, "no answer in time"),
    ]


async def test_a_daemon_owning_nothing_still_answers_for_itself() -> None:
    async def never(address: str) -> Status:
        raise AssertionError(address)

    view = ClusterView(count=2, owners=FixedOwners({0: None, 1: None}), local=local, ask=never)
    found = await view.status()
    assert found.unowned == [0, 1] and [(d.owner_id, d.buckets, d.here) for d in found.daemons] == [
        ("A", [], True)
    ]


async def test_a_lone_daemons_cluster_is_itself_over_the_admin_api_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WADISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data", extra=ADMIN_SECTION, buckets=4)) as (
            daemon,
            client,
        ):
            resp = await client.get("/admin/v1/cluster", headers=ADMIN, auth=None)
            assert resp.status_code == 200
            found = msgspec.json.decode(resp.content, type=ClusterStatus)
            assert found.buckets == 4 and found.unowned == []
            [me] = found.daemons
            assert me.here and me.reachable and me.buckets == [0, 1, 2, 3] and me.address == daemon.url
            assert me.status is not None and len(me.status.numbers) == 3
            assert (await client.get("/admin/v1/cluster", auth=None)).status_code == 401
            code, out, _ = await cli(capsys, "status", "--cluster", "--url", daemon.url)
            assert code == 0
            assert "wadispatch cluster: 1 daemons, 4 buckets, 3 numbers running" in out
            assert "(this one)" in out and "0-3" in out and "+15550000002" in out
            code, out, _ = await cli(capsys, "status", "--cluster", "--json", "--url", daemon.url)
            assert code == 0 and msgspec.json.decode(out, type=ClusterStatus).daemons[0].buckets == [
                0,
                1,
                2,
                3,
            ]
