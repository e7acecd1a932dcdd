"""The app-level Cloud webhook across real daemons: two daemon processes on one data root (B = 4)
own its buckets through a real 3-member etcd; one Cloud number per bucket. Meta's one delivery,
posted to one daemon, is applied for every number by each bucket's owner; a tampered signature
applies nothing anywhere; with one owner killed the delivery is a 503 (its buckets missing, the
others applied) and Meta's redelivery once the buckets have owners again applies the rest, every
message exactly once. Skipped when etcd is not installed."""

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

from dispatcher.core.bucketing import bucket_of
from dispatcher.frontdoor.cloud_routes import signature
from tests.helpers.configs import cloud_table
from tests.helpers.etcd import ETCD, MISSING, cluster_section, free_port, running_etcd
from tests.helpers.processes import ACCOUNT, ROOT, TOKEN, config_text, start_simulator, stop, wait_healthy

pytestmark = pytest.mark.skipif(ETCD is None, reason=MISSING)

TTL, GRACE = 3.0, 0.5
ADMIN_TOKEN = "cloud-app-cluster-admin-0123456789"
SECRET = "cloud-app-secret-0123456789"
CUSTOMER = "16505551234"
# One Cloud number per bucket of four, and its phone number id.
CLOUD = {"+15550009992": "200000000000000", "+15550009990": "200000000000001"}
CLOUD |= {"+15550009991": "200000000000002", "+15550009995": "200000000000003"}
LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@attrs.define
class Daemons:
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    configs: list[Path]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        """Daemon ``i`` started (again), once it answers."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "run", "--config", str(self.configs[i])],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        if i < len(self.procs):
            self.procs[i] = proc
        else:
            self.procs.append(proc)
        wait_healthy(self.ports[i])

    def owned(self, i: int) -> list[int]:
        status = httpx.get(
            f"{self.url(i)}/admin/v1/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5.0
        ).json()
        return [b["bucket"] for b in status["buckets"] if b["owned"]]

    def settled(self) -> list[list[int]]:
        """Each daemon's buckets once every bucket has one owner and each daemon two."""
        deadline = time.monotonic() + 6 * TTL
        while True:
            shares = [self.owned(i) for i in range(len(self.ports))]
            if sorted(b for s in shares for b in s) == [0, 1, 2, 3] and all(len(s) == 2 for s in shares):
                return shares
            assert time.monotonic() < deadline, shares
            time.sleep(0.1)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    sim_port = free_port()
    sim = start_simulator(sim_port)  # the On-Prem numbers' endpoint; nothing is sent in these tests
    clouds = "".join(
        cloud_table(
            number,
            account=ACCOUNT,
            phone_number_id=pnid,
            app_secret=SECRET,
            verify_token="cloud-app-verify-0123456789",
            endpoints=[f"http://127.0.0.1:{sim_port}"],
            request_timeout=1.0,
        )
        for number, pnid in CLOUD.items()
    )
    daemons = Daemons([free_port() for _ in range(2)], [], [tmp_path / f"d{i}.toml" for i in range(2)])
    try:
        with running_etcd(tmp_path / "etcd") as etcd:
            section = f"""
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
[watch]
check_at_start = false
{cluster_section(etcd.endpoints, name="cloudapp", ttl=TTL, grace=GRACE)}
{clouds}
"""
            try:
                for i, port in enumerate(daemons.ports):
                    daemons.configs[i].write_text(
                        config_text(tmp_path / "data", port, sim_port, cluster=section)
                    )
                    daemons.start(i)  # one after another: the first creates the data root
                yield daemons
            finally:
                for proc in daemons.procs:
                    stop(proc)
    finally:
        stop(sim)


def delivery(tag: str) -> bytes:
    """Meta's shape (pywa's text message payload): one entry per number, a customer's message each."""
    entries = [
        {
            "id": "1234567890987654321",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": number.lstrip("+"), "phone_number_id": pnid},
                        "contacts": [{"profile": {"name": "Test Name"}, "wa_id": CUSTOMER}],
                        "messages": [
                            {
                                "from": CUSTOMER,
                                "id": f"wamid.{tag}.{pnid}",
                                "timestamp": "1697043223",
                                "text": {"body": f"{tag} to {number}"},
                                "type": "text",
                            }
                        ],
                    },
                }
            ],
        }
        for number, pnid in CLOUD.items()
    ]
    return json.dumps({"object": "whatsapp_business_account", "entry": entries}).encode()


def post(url: str, body: bytes, secret: str = SECRET) -> httpx.Response:
    headers = {"X-Hub-Signature-256": signature(secret, body), "Content-Type": "application/json"}
    return httpx.post(f"{url}/webhooks/cloud", content=body, headers=headers, timeout=30.0)


def received(url: str) -> list[str]:
    """Every customer message stored, on whichever daemon's bucket (the list gathers them all)."""
    resp = httpx.get(
        f"{url}{LIST}",
        params={"From": f"whatsapp:+{CUSTOMER}", "PageSize": 100},
        auth=(ACCOUNT, TOKEN),
        timeout=20.0,
    )
    assert resp.status_code == 200, resp.text
    return sorted(m["body"] for m in resp.json()["messages"])


def test_one_delivery_is_applied_by_each_buckets_owner_and_a_lost_part_by_the_redelivery(
    daemons: Daemons,
) -> None:
    shares = daemons.settled()
    assert sorted(bucket_of(n, 4) for n in CLOUD) == [0, 1, 2, 3]
    every = sorted(f"{{}} to {n}" for n in CLOUD)

    first = delivery("one")
    # A part naming a bucket the asked daemon does not own is refused whole: nothing applied.
    part = {
        "x-wadispatch-forwarded-by": "test",
        "x-wadispatch-cloud-buckets": f"{shares[0][0]},{shares[1][0]}",
    }
    moved = httpx.post(
        f"{daemons.url(0)}/webhooks/cloud",
        content=first,
        headers={"X-Hub-Signature-256": signature(SECRET, first), **part},
        timeout=30.0,
    )
    assert (moved.status_code, moved.headers["Retry-After"]) == (503, "1"), moved.text
    assert received(daemons.url(0)) == []
    assert post(daemons.url(0), first).status_code == 200
    assert post(daemons.url(1), first).status_code == 200  # Meta's redelivery, through the other door
    assert received(daemons.url(1)) == [m.format("one") for m in every]

    tampered = first.replace(b'"one to', b'"two to')
    resp = httpx.post(
        f"{daemons.url(0)}/webhooks/cloud",
        content=tampered,
        headers={"X-Hub-Signature-256": signature(SECRET, first)},
        timeout=30.0,
    )
    assert resp.status_code == 403
    assert received(daemons.url(0)) == [m.format("one") for m in every]

    # Daemon 1 dies: its buckets keep their owner (unreachable) until its lease lapses.
    daemons.procs[1].send_signal(signal.SIGKILL)
    daemons.procs[1].wait()
    second = delivery("two")
    refused = post(daemons.url(0), second)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    for bucket in shares[1]:
        assert str(bucket) in refused.json()["error"]
    metrics = httpx.get(f"{daemons.url(0)}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
    assert "wadispatch_cloud_app_failed_total 1.0" in metrics  # its one ask of the dead owner
    assert "wadispatch_cloud_app_asked_total 1.0" in metrics  # the first delivery's part at daemon 1
    daemons.start(1)
    daemons.settled()
    here = {n for n in CLOUD if bucket_of(n, 4) in shares[0]}
    partly = [m.format("one") for m in every] + sorted(f"two to {n}" for n in here)
    assert received(daemons.url(0)) == sorted(partly)  # what the owner that answered applied

    for i in (1, 0):  # Meta redelivers (to either door): the rest applied, once
        assert post(daemons.url(i), second).status_code == 200
    assert received(daemons.url(1)) == sorted(
        [m.format("one") for m in every] + [m.format("two") for m in every]
    )
