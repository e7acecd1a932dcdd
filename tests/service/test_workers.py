"""``wadispatch run --workers 2``: two real processes share the port and the buckets (flock);
kill one and the other takes its buckets within a second, and nothing is lost.

The numbers send to a simulator process of their own (every worker reaches the same one),
so what it received is the truth about what was sent. A create reaching a worker that does
not own its bucket is forwarded to the owner; one for a bucket between two owners (right
after the kill) is answered 503, and the client here retries it, as Retry-After says.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import trio

from dispatcher.core.bucketing import bucket_of
from dispatcher.core.dataroot import open_root
from dispatcher.frontdoor.lane_client import LaneClient
from dispatcher.ownership.flock import read_record
from tests.helpers.etcd import free_port
from tests.helpers.processes import (
    ACCOUNT,
    NUMBERS,
    ROOT,
    TOKEN,
    config_text,
    create,
    owners,
    received,
    start_simulator,
    stop,
    wait_healthy,
    wait_received,
)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """A simulator process and ``wadispatch run --workers 2``: (front port, simulator port, data dir)."""
    port, sim_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    cfg = tmp_path / "dispatcher.toml"
    cfg.write_text(config_text(data_dir, port, sim_port))
    sim = start_simulator(sim_port)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_healthy(port)
        yield port, sim_port, data_dir
    finally:
        stop(daemon)
        assert daemon.returncode == 0  # every worker drained and exited cleanly on SIGTERM
        stop(sim)


def test_a_killed_worker_s_buckets_are_taken_within_a_second_and_nothing_is_lost(
    processes: tuple[int, int, Path],
) -> None:
    port, sim_port, data_dir = processes
    deadline = time.monotonic() + 10
    while len(set(owners(data_dir).values())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = owners(data_dir)
    assert len(before) == 4 and len(set(before.values())) == 2, before  # two each
    bodies = [f"m{i}" for i in range(300)]
    for i, body in enumerate(bodies[:150]):
        create([port], NUMBERS[i % 3], body)
    victim = before[0]
    os.kill(int(victim.rsplit("-", 1)[1]), signal.SIGKILL)
    killed = time.monotonic()
    while any(owner == victim for owner in owners(data_dir).values()) or len(owners(data_dir)) < 4:
        assert time.monotonic() - killed < 1.0, f"still {owners(data_dir)} a second after the kill"
        time.sleep(0.01)
    for i, body in enumerate(bodies[150:], 150):
        create([port], NUMBERS[i % 3], body)
    got = wait_received(sim_port, bodies)
    assert not set(bodies) - set(got), f"lost: {sorted(set(bodies) - set(got))[:20]}"
    duplicates = len(got) - len(set(got))
    assert duplicates <= 32, duplicates  # at most what was in flight at the kill (max_in_flight)


def test_the_members_table_lists_each_worker(processes: tuple[int, int, Path]) -> None:
    _, _, data_dir = processes
    deadline = time.monotonic() + 10
    members: list[Path] = []
    while time.monotonic() < deadline:
        members = sorted((data_dir / "members").glob("*.member"))
        if len(members) == 2:
            break
        time.sleep(0.05)
    assert len(members) == 2
    records = [read_record(m) for m in members]
    assert all(r is not None and r.address.startswith("http://127.0.0.1:") for r in records)
    assert len({json.dumps(r.address) for r in records if r is not None}) == 2  # each its own peer port
    assert all(r is not None and r.lane.startswith("lane://127.0.0.1:") for r in records)
    assert len({r.lane for r in records if r is not None}) == 2  # each its own lane: forwards go there


CREATE = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()


async def test_a_request_over_a_lane_is_never_forwarded_again(processes: tuple[int, int, Path]) -> None:
    """A worker's lane takes a create for a bucket the other worker owns: judged where it landed
    (503, the bucket is not this worker's), not sent on a second hop."""
    _, sim_port, data_dir = processes
    deadline = time.monotonic() + 10
    while len(set(owners(data_dir).values())) < 2 or len(owners(data_dir)) < 4:
        assert time.monotonic() < deadline, owners(data_dir)
        await trio.sleep(0.05)
    root = open_root(data_dir)
    holders = {b: read_record(root.lock_path(b)) for b in range(root.count)}
    number = next(n for n in NUMBERS if holders[bucket_of(n, root.count)] is not None)
    owner = holders[bucket_of(number, root.count)]
    assert owner is not None
    other = next(h for h in holders.values() if h is not None and h.owner_id != owner.owner_id)
    client = LaneClient(other.lane, max_request=1 << 20, max_response=1 << 20, request_timeout=10.0)
    auth = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
    body = urlencode({"From": f"whatsapp:{number}", "To": "whatsapp:+15557770000", "Body": "one hop"})
    headers = [(b"authorization", b"Basic " + auth), (b"content-type", b"application/x-www-form-urlencoded")]
    with trio.fail_after(30):
        answer = await client.request(b"POST", CREATE, headers, body.encode())
        await client.aclose()
    assert answer.status == 503, answer.body
    assert "changing owner" in answer.body.decode()
    assert "one hop" not in received(sim_port)
