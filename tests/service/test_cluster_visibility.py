"""Three real daemons that share nothing but a real 3-member etcd: each has a data root of its own
(as hosts whose bucket volumes are attached to one host each), so a bucket's messages are only
where its owner is. Any daemon must still list every bucket's messages (the real twilio SDK
pages through them), and a list that cannot reach a bucket is a 503 with Retry-After, not a
page silently missing it. Skipped when etcd is not installed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest
from twilio.rest import Client

from dispatcher.core.bucketing import bucket_of
from tests.helpers.etcd import ETCD, MISSING, EtcdCluster, free_port
from tests.helpers.processes import (
    ACCOUNT,
    NUMBERS,
    ROOT,
    TOKEN,
    config_text,
    create,
    start_simulator,
    stop,
    wait_healthy,
)

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)

TTL, GRACE = 3.0, 0.5
ADMIN_TOKEN = "cluster-visibility-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@attrs.define
class Hosts:
    etcd: EtcdCluster
    sim_port: int
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    roots: list[Path]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def owned(self, i: int) -> list[int]:
        status = httpx.get(f"{self.url(i)}/admin/v1/status", headers=ADMIN, timeout=5.0).json()
        return [b["bucket"] for b in status["buckets"] if b["owned"]]

    def settled(self) -> list[list[int]]:
        """Each daemon's buckets once every bucket has one owner and none more than its share."""
        deadline = time.monotonic() + 4 * TTL
        while True:
            shares = [self.owned(i) for i in range(len(self.ports))]
            flat = sorted(b for share in shares for b in share)
            if flat == [0, 1, 2, 3] and all(len(s) <= 2 for s in shares):
                return shares
            assert time.monotonic() < deadline, shares
            time.sleep(0.1)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    etcd = EtcdCluster(tmp_path / "etcd")
    sim_port = free_port()
    sim = start_simulator(sim_port)
    ports = [free_port() for _ in range(3)]
    roots = [tmp_path / f"host{i}" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd.start()
        section = f"""
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
[cluster]
backend = "etcd"
name = "visibility"
[cluster.etcd]
endpoints = {json.dumps(etcd.endpoints)}
ttl = {TTL}
margin = 0.5
grace = {GRACE}
request_timeout = 0.5
"""
        for i, port in enumerate(ports):
            cfg = tmp_path / f"d{i}.toml"
            cfg.write_text(config_text(roots[i], port, sim_port, cluster=section))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                )
            )
        for port in ports:
            wait_healthy(port)
        yield Hosts(etcd, sim_port, ports, procs, roots)
    finally:
        for proc in procs:
            stop(proc)
        stop(sim)
        etcd.stop()


def sdk_list(url: str, **filters: str) -> list[str]:
    api = Client(ACCOUNT, TOKEN)
    api.api.base_url = url
    return [m.sid for m in api.messages.list(page_size=4, **filters)]  # type: ignore[arg-type]


def test_any_daemon_lists_every_hosts_buckets_and_an_unreachable_owner_makes_it_a_503(hosts: Hosts) -> None:
    shares = hosts.settled()
    created: list[tuple[str, str]] = []  # (sid, sender)
    for i in range(21):
        sender = NUMBERS[i % 3]
        created.append((create([hosts.ports[i % 3]], sender, f"v{i}"), sender))
        time.sleep(0.002)  # distinct creation ms: the list's order is the creation order
    newest_first = [sid for sid, _ in reversed(created)]
    holders = {i for i, share in enumerate(shares) for n in NUMBERS if bucket_of(n, 4) in share}
    assert len(holders) >= 2  # the messages really are spread over hosts that share no root

    for i in range(3):
        assert sdk_list(hosts.url(i)) == newest_first, f"daemon {i}"
        sender = NUMBERS[1]
        assert sdk_list(hosts.url(i), from_=f"whatsapp:{sender}") == [
            sid for sid, frm in reversed(created) if frm == sender
        ]

    # The owner of NUMBERS[0]'s bucket dies; until its lease lapses it is still the owner, unreachable.
    bucket = bucket_of(NUMBERS[0], 4)
    victim = next(i for i, share in enumerate(shares) if bucket in share)
    asker = next(i for i in range(3) if i != victim)
    hosts.procs[victim].send_signal(signal.SIGKILL)
    hosts.procs[victim].wait()
    refused = httpx.get(f"{hosts.url(asker)}{LIST}", auth=(ACCOUNT, TOKEN), timeout=10.0)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["code"] == 20503
    assert str(bucket) in refused.json()["message"]


def test_a_part_request_is_checked_like_any_list(hosts: Hosts) -> None:
    """What one daemon asks another is a list request: the owner checks its credentials and that it
    holds the buckets named, and answers only those."""
    shares = hosts.settled()
    owner = next(i for i, share in enumerate(shares) if share)
    other = next(b for b in range(4) if b not in shares[owner])
    part = {"x-wadispatch-list-part": str(shares[owner][0]), "x-wadispatch-forwarded-by": "test"}
    url = f"{hosts.url(owner)}{LIST}"
    assert httpx.get(url, headers=part, auth=(ACCOUNT, "wrong-token-0123456789")).status_code == 401
    answered = httpx.get(url, headers=part, auth=(ACCOUNT, TOKEN))
    assert answered.status_code == 200
    assert answered.headers["content-type"] == "application/vnd.wadispatch.list-part+msgpack"
    moved = httpx.get(url, headers={**part, "x-wadispatch-list-part": str(other)}, auth=(ACCOUNT, TOKEN))
    assert moved.status_code == 503 and moved.headers["Retry-After"] == "1"
    bad = httpx.get(url, headers={**part, "x-wadispatch-list-part": "9"}, auth=(ACCOUNT, TOKEN))
    assert bad.status_code == 400
