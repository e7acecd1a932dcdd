"""Three real daemons that share nothing but a real 3-member etcd: each has a data root of its own
(as hosts whose bucket volumes are attached to one host each), so a bucket's messages are only
where its owner is. Any daemon must still list every bucket's messages (the real twilio SDK
pages through them), and a list that cannot reach a bucket is a 503 with Retry-After, not a
page silently missing it. Skipped when etcd is not installed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import httpx
import pytest
from twilio.rest import Client

from dispatcher.core.bucketing import bucket_of
from tests.helpers.etcd import ETCD, MISSING, EtcdCluster, cluster_section, free_port
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

needs_etcd = pytest.mark.skipif(ETCD is None, reason=MISSING)

TTL, GRACE = 3.0, 0.5
ADMIN_TOKEN = "cluster-visibility-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@attrs.define
class Hosts:
    etcd: EtcdCluster | None
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


@contextlib.contextmanager
def start_hosts(
    tmp_path: Path, *, waba: bool = False, flock: bool = False, shared: bool = False
) -> Iterator[Hosts]:
    """etcd, the simulator and three daemons, each on a data root of its own (``flock``: on one data
    root, owning buckets by flock, no etcd; ``shared``: on one data root through etcd). ``waba``: a
    WABA at the simulator's Graph numbers can be onboarded into, and every daemon's public URL the
    first one's (a load balancer's stand-in: where the numbers' webhooks are subscribed)."""
    etcd = None if flock else EtcdCluster(tmp_path / "etcd")
    sim_port = free_port()
    sim = start_simulator(sim_port)
    ports, peers, lanes = (distinct_ports(9)[i::3] for i in range(3))
    roots = [tmp_path / ("root" if flock or shared else f"host{i}") for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if etcd is not None:
            etcd.start()
        section = f"""
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
""" + cluster_section(etcd.endpoints if etcd is not None else [], name="visibility", ttl=TTL, grace=GRACE)
        if flock:
            section = section.split("[cluster]")[0] + '[cluster]\nbackend = "flock"\n'
        if waba:
            graph = f"http://127.0.0.1:{sim_port}/_sim"
            wait_until(lambda: _answers(f"{graph}/wabas"), 20.0, "the simulator never answered")
            httpx.post(f"{graph}/wabas", json={"id": WABA, "access_token": WABA_TOKEN}).raise_for_status()
            httpx.post(
                f"{graph}/graph/wabas", json={"id": WABA, "token": WABA_TOKEN, "app_secret": WABA_SECRET}
            ).raise_for_status()
        for i, port in enumerate(ports):
            cfg = tmp_path / f"d{i}.toml"
            extra = waba_section(sim_port) if waba else ""
            # Every port chosen here: a daemon binding port 0 could take the port meant for the next one.
            listens = f'peer_listen = "127.0.0.1:{peers[i]}"\nlane_listen = "127.0.0.1:{lanes[i]}"\n'
            text = config_text(
                roots[i],
                port,
                sim_port,
                cluster=section.replace("[cluster]\n", "[cluster]\n" + listens),
                extra=extra,
            )
            if waba:
                text = text.replace(
                    "[server]\n", f'[server]\npublic_url = "http://127.0.0.1:{ports[0]}"\n', 1
                )
            cfg.write_text(text)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                )
            )
            if flock or shared:
                wait_healthy(port)  # one after another: the first creates the data root
        for port in ports:
            wait_healthy(port)
        yield Hosts(etcd, sim_port, ports, procs, roots)
    finally:
        for proc in procs:
            stop(proc)
        stop(sim)
        if etcd is not None:
            etcd.stop()


def distinct_ports(count: int) -> list[int]:
    found: list[int] = []
    while len(found) < count:
        if (port := free_port()) not in found:
            found.append(port)
    return found


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    with start_hosts(tmp_path) as started:
        yield started


def sdk_list(url: str, **filters: str) -> list[str]:
    api = Client(ACCOUNT, TOKEN)
    api.api.base_url = url
    return [m.sid for m in api.messages.list(page_size=4, **filters)]  # type: ignore[arg-type]


@needs_etcd
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


@needs_etcd
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


WABA = "102290129340398"
WABA_TOKEN = "EAAwabasystemuser0123"
WABA_SECRET = "waba-app-secret-0123456789"
WABA_VERIFY = "waba-verify-token-0123456789"
PIN = "246810"
CUSTOMER = "+15557770042"


def waba_section(sim_port: int) -> str:
    return f"""
[[wabas]]
id = "{WABA}"
account = "{ACCOUNT}"
access_token = {{ value = "{WABA_TOKEN}" }}
endpoint = "http://127.0.0.1:{sim_port}"
app_secret = {{ value = "{WABA_SECRET}" }}
verify_token = {{ value = "{WABA_VERIFY}" }}
"""


def admin(hosts: Hosts, i: int, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{hosts.url(i)}/admin/v1{path}", json=body, headers=ADMIN, timeout=20.0)


def running(hosts: Hosts, i: int) -> set[str]:
    status = httpx.get(f"{hosts.url(i)}/admin/v1/status", headers=ADMIN, timeout=5.0).json()
    return {n["number"] for n in status["numbers"]}


def onboard_through(hosts: Hosts, i: int, number: str) -> str:
    """add, verify, register through daemon ``i``; the number's phone number id."""
    added = admin(hosts, i, "POST", "/numbers", {"number": number, "waba": WABA, "verified_name": "Shrub"})
    assert added.status_code == 201, added.text
    pnid = str(added.json()["phone_number_id"])
    sim = f"http://127.0.0.1:{hosts.sim_port}/_sim/graph/numbers/{pnid}"
    code = httpx.get(sim, timeout=5.0).json()["verification_code"]
    digits = number.lstrip("+")
    verified = admin(hosts, i, "POST", f"/numbers/{digits}/verify", {"code": code})
    assert verified.status_code == 200, verified.text
    registered = admin(hosts, i, "POST", f"/numbers/{digits}/register", {"pin": PIN})
    assert registered.status_code == 200, registered.text
    assert registered.json()["state"] == "active"
    return pnid


def signed_inbound(number: str, pnid: str, wamid: str) -> tuple[bytes, dict[str, str]]:
    """A customer's text to ``number`` as Meta posts it (Cloud API webhook, signed with the app secret)."""
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": number.lstrip("+"),
                                    "phone_number_id": pnid,
                                },
                                "contacts": [{"profile": {"name": "Kerry"}, "wa_id": CUSTOMER.lstrip("+")}],
                                "messages": [
                                    {
                                        "from": CUSTOMER.lstrip("+"),
                                        "id": wamid,
                                        "timestamp": str(int(time.time())),
                                        "type": "text",
                                        "text": {"body": "hello " + wamid},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    digest = hmac.new(WABA_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def every_daemon_takes_its_webhooks(hosts: Hosts, number: str, pnid: str, tag: str) -> None:
    """A customer's message to ``number`` posted to each daemon is taken (200): every front door
    knows the number and hands its webhook to the daemon running it."""
    for i in range(len(hosts.ports)):
        body, headers = signed_inbound(number, pnid, f"wamid.{tag}{i}")
        url = f"{hosts.url(i)}/webhooks/cloud/{number.lstrip('+')}"
        wait_until(
            lambda url=url, body=body, headers=headers: (  # type: ignore[misc]
                httpx.post(url, content=body, headers=headers).status_code == 200
            ),
            10.0,
            f"daemon {i} never took {number}'s webhook",
        )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@needs_etcd
def test_a_number_onboarded_through_any_daemon_is_known_cluster_wide_and_runs_at_its_buckets_owner(
    tmp_path: Path,
) -> None:
    with start_hosts(tmp_path, waba=True) as hosts:
        shares = hosts.settled()
        owner_of = {b: i for i, share in enumerate(shares) for b in share}
        # Two numbers of one bucket daemon 0 (the public URL, where the admin calls go) does not own.
        bucket = next(b for b in range(4) if owner_of[b] != 0)
        kept, removed = [n for n in (f"+1555078{i:04d}" for i in range(200)) if bucket_of(n, 4) == bucket][:2]
        owner = owner_of[bucket_of(kept, 4)]
        pnid = onboard_through(hosts, 0, kept)  # each step forwarded to the owner of its bucket
        onboard_through(hosts, 0, removed)
        assert kept in running(hosts, owner)
        assert all(kept not in running(hosts, i) for i in range(3) if i != owner)
        for i in range(3):  # the records are in the owner's root only; every daemon lists them
            listed = admin(hosts, i, "GET", "/numbers").json()["numbers"]
            assert [(r["number"], r["state"]) for r in listed] == [(kept, "active"), (removed, "active")]

        # Every front door knows it: a webhook of the number reaching any daemon goes to its owner.
        every_daemon_takes_its_webhooks(hosts, kept, pnid, "visibility")
        inbound = sdk_list(hosts.url(2), from_=f"whatsapp:{CUSTOMER}")
        assert len(inbound) == 3  # stored by the owner, listed through any daemon
        # The window is open: a free-form reply through another daemon is sent by the owner.
        sid = create([hosts.ports[(owner + 1) % 3]], kept, "thanks", to=CUSTOMER)
        wait_until(
            lambda: (
                httpx.get(
                    f"{hosts.url(0)}/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json", auth=(ACCOUNT, TOKEN)
                ).json()["status"]
                in ("sent", "delivered", "read")
            ),
            15.0,
            f"{sid} never went out",
        )

        # Removed through daemon 0: the owner stops it, and every daemon forgets it.
        gone = admin(hosts, 0, "DELETE", f"/numbers/{removed.lstrip('+')}")
        assert gone.status_code == 200, gone.text
        assert removed not in running(hosts, owner)
        refused = httpx.post(
            f"{hosts.url(0)}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
            data={"From": f"whatsapp:{removed}", "To": f"whatsapp:{CUSTOMER}", "Body": "no"},
            auth=(ACCOUNT, TOKEN),
        )
        assert refused.status_code == 400, refused.text

        # The owner dies: whoever takes the bucket starts the number, though its own root never held
        # the onboarding record (the cluster's roster said it runs); not the removed one.
        hosts.procs[owner].send_signal(signal.SIGKILL)
        hosts.procs[owner].wait()
        survivors = [i for i in range(3) if i != owner]
        unlisted = admin(hosts, survivors[0], "GET", "/numbers")  # its owner still holds the lease
        assert unlisted.status_code == 503 and unlisted.headers["Retry-After"] == "1", unlisted.text
        wait_until(
            lambda: any(kept in running(hosts, i) for i in survivors),
            4 * TTL,
            f"nobody took over {kept}",
        )
        heir = next(i for i in survivors if kept in running(hosts, i))
        assert removed not in running(hosts, heir)
        wait_until(lambda: admin(hosts, heir, "GET", "/numbers").status_code == 200, 4 * TTL, "no whole list")
        records = admin(hosts, heir, "GET", "/numbers").json()["numbers"]
        assert kept not in {r["number"] for r in records}  # its record stayed in the dead host's root


def test_on_one_shared_root_a_number_onboarded_through_any_worker_is_known_to_all_and_taken_over(
    tmp_path: Path,
) -> None:
    """flock: the onboarding record in the shared root is how the other daemons learn of it."""
    with start_hosts(tmp_path, waba=True, flock=True) as hosts:
        shares = hosts.settled()
        owner_of = {b: i for i, share in enumerate(shares) for b in share}
        bucket = next(b for b in range(4) if owner_of[b] != 0)
        number = next(n for n in (f"+1555078{i:04d}" for i in range(200)) if bucket_of(n, 4) == bucket)
        owner = owner_of[bucket]
        pnid = onboard_through(hosts, 0, number)
        assert number in running(hosts, owner)
        every_daemon_takes_its_webhooks(hosts, number, pnid, "flock")
        assert len(sdk_list(hosts.url(0), from_=f"whatsapp:{CUSTOMER}")) == 3
        hosts.procs[owner].send_signal(signal.SIGKILL)
        hosts.procs[owner].wait()
        survivors = [i for i in range(3) if i != owner]
        wait_until(lambda: any(number in running(hosts, i) for i in survivors), 10.0, f"nobody took {number}")


@contextlib.contextmanager
def console_client(hosts: Hosts, i: int) -> Iterator[httpx.Client]:
    """Logged in to daemon ``i``'s console, as a browser (its cookie kept)."""
    with httpx.Client(base_url=hosts.url(i), timeout=20.0) as client:
        login = client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console/fleet"})
        assert login.status_code == 303, login.text
        yield client


@needs_etcd
def test_the_console_fleet_and_the_cluster_status_show_every_daemons_numbers(hosts: Hosts) -> None:
    shares = hosts.settled()
    runs = {n: next(i for i, share in enumerate(shares) if bucket_of(n, 4) in share) for n in NUMBERS}
    assert len(set(runs.values())) >= 2  # the numbers really run in different daemons
    for i in range(3):
        with console_client(hosts, i) as client:
            live = client.get("/console/api/fleet").json()
            assert live["numbers"] == sorted(NUMBERS), f"daemon {i}"
            assert live["summary"]["fleet"] == 3 and live["summary"]["unreachable"] == []
            assert live["summary"]["states"] == {"running": 3}
            paged = client.get(
                "/console/api/fleet", params={"size": "1", "page": "1", "order": "desc"}
            ).json()
            assert paged["numbers"] == [sorted(NUMBERS)[1]] and paged["summary"]["total"] == 3
            only = client.get("/console/api/fleet", params={"q": NUMBERS[2][-4:]}).json()
            assert only["numbers"] == [NUMBERS[2]] and only["summary"]["total"] == 1
            page = client.get("/console/fleet")
            assert page.status_code == 200 and all(n in page.text for n in NUMBERS)
            assert 'id="unreachable"' not in page.text
        merged = httpx.get(
            f"{hosts.url(i)}/admin/v1/status", params={"scope": "cluster"}, headers=ADMIN
        ).json()
        assert [n["number"] for n in merged["numbers"]] == sorted(NUMBERS)
        assert [b["bucket"] for b in merged["buckets"]] == [0, 1, 2, 3]
        assert all(b["owned"] for b in merged["buckets"])
        own = httpx.get(f"{hosts.url(i)}/admin/v1/status", headers=ADMIN).json()  # the default: this daemon
        assert {n["number"] for n in own["numbers"]} == {n for n, at in runs.items() if at == i}
        # An admin call about one number, through any daemon, reaches the daemon running it.
        outbox = httpx.get(f"{hosts.url(i)}/admin/v1/numbers/{NUMBERS[0]}/outbox", headers=ADMIN)
        assert outbox.status_code == 200 and outbox.json()["number"] == NUMBERS[0]

    victim = runs[NUMBERS[0]]
    asker = next(i for i in range(3) if i != victim)
    hosts.procs[victim].send_signal(signal.SIGKILL)
    hosts.procs[victim].wait()
    with console_client(hosts, asker) as client:
        live = client.get("/console/api/fleet").json()  # its lease not lapsed yet: an unreachable owner
        gone = {n for n, at in runs.items() if at == victim}
        assert live["numbers"] == sorted(set(NUMBERS) - gone)
        assert len(live["summary"]["unreachable"]) == 1
        assert 'id="unreachable"' in client.get("/console/fleet").text
    refused = httpx.get(f"{hosts.url(asker)}/admin/v1/status", params={"scope": "cluster"}, headers=ADMIN)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    bad = httpx.get(f"{hosts.url(asker)}/admin/v1/status", params={"scope": "everything"}, headers=ADMIN)
    assert bad.status_code == 400


@needs_etcd
def test_a_bucket_gained_tells_the_cluster_of_its_numbers_the_roster_lacks(tmp_path: Path) -> None:
    """A number started before the roster was shared (here: its etcd key deleted behind the
    daemons' backs) stops everywhere, since etcd is the roster; the next owner of its bucket
    finds its record in the bucket and publishes it, and runs it."""
    with start_hosts(tmp_path, waba=True, shared=True) as hosts:
        assert hosts.etcd is not None
        shares = hosts.settled()
        owner_of = {b: i for i, share in enumerate(shares) for b in share}
        bucket = next(b for b in range(4) if owner_of[b] != 0)
        number = next(n for n in (f"+1555078{i:04d}" for i in range(200)) if bucket_of(n, 4) == bucket)
        owner = owner_of[bucket]
        onboard_through(hosts, 0, number)
        assert number in running(hosts, owner)
        key = base64.b64encode(f"/wadispatch/visibility/numbers/{number}".encode()).decode()
        etcd = hosts.etcd.endpoints[0]
        httpx.post(f"{etcd}/v3/kv/deleterange", json={"key": key}, timeout=5.0).raise_for_status()
        wait_until(lambda: number not in running(hosts, owner), 10.0, "the roster's truth is etcd's")
        hosts.procs[owner].send_signal(signal.SIGKILL)
        hosts.procs[owner].wait()
        survivors = [i for i in range(3) if i != owner]
        wait_until(
            lambda: any(number in running(hosts, i) for i in survivors),
            4 * TTL,
            f"nobody runs {number} again",
        )
        found = httpx.post(f"{etcd}/v3/kv/range", json={"key": key}, timeout=5.0).json()
        assert found.get("count") == "1"  # published again by the bucket's new owner
