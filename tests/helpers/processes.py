"""Real daemon processes on one data root, sending to a simulator process: the multi-process tests.

The numbers send to a simulator process of their own (every daemon reaches the same one), so
what it received, and from whom (its per-sender log), is the truth about what was sent.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from dispatcher.core.dataroot import open_root
from dispatcher.ownership.flock import read_record

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "cluster-auth-token-0123456789"
NUMBERS = ("+15550000001", "+15550000002", "+15550000003")
PASSWORD = "Cluster-Passw0rd!"
ROOT = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT = 1.0  # the numbers' (so an etcd ttl of a few seconds leaves a send window)


def config_text(
    data_dir: Path,
    port: int,
    sim_port: int,
    *,
    numbers: Sequence[str] = NUMBERS,
    buckets: int = 4,
    cluster: str = "",
    extra: str = "",
    level: str = "warning",
    rate: float = 200.0,
) -> str:
    """A daemon on ``data_dir`` whose ``numbers`` send to the simulator process on ``sim_port``;
    ``cluster`` and ``extra`` are whole TOML tables."""
    sections = "".join(
        f"""
[[numbers]]
number = "{n}"
account = "{ACCOUNT}"
endpoints = ["http://127.0.0.1:{sim_port}/{n.lstrip("+")}"]
enforce_window = false
password = {{ value = "{PASSWORD}" }}
webhook_secret = {{ value = "cluster-hook-secret-{i}-0123" }}
rate = {rate}
burst = {int(rate)}
max_in_flight = 32
request_timeout = {REQUEST_TIMEOUT}
"""
        for i, n in enumerate(numbers)
    )
    return f"""
[server]
listen = "127.0.0.1:{port}"
drain_timeout = 2.0
graceful_timeout = 1.0
[store]
data_dir = "{data_dir}"
buckets = {buckets}
map_size_mb = 256
[log]
level = "{level}"
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
{extra}
{cluster}
{sections}
"""


def start_simulator(sim_port: int, numbers: Sequence[str] = NUMBERS) -> subprocess.Popen[bytes]:
    """The simulator as its own process serving ``numbers``, no status webhooks, limits out of reach."""
    args = [arg for n in numbers for arg in ("--number", f"{n}:{PASSWORD}")]
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher.simulator", "--listen", f"127.0.0.1:{sim_port}", *args,
         "--status-delays", "off", "--rate", "100000", "--burst", "100000", "--log-level", "error"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_healthy(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on port {port} within {timeout:g} s")


def create(ports: list[int], frm: str, body: str, attempts: int = 500, *, to: str = "+15557770000") -> str:
    """POST one message through the first port; a 503 (a bucket owned elsewhere, or changing hands)
    is retried on a new connection, to the next port."""
    for attempt in range(attempts):
        port = ports[attempt % len(ports)]
        try:
            resp = httpx.post(
                f"http://127.0.0.1:{port}/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
                data={"From": f"whatsapp:{frm}", "To": f"whatsapp:{to}", "Body": body},
                auth=(ACCOUNT, TOKEN),
                timeout=10.0,
            )
        except httpx.TransportError:  # a daemon killed on purpose
            time.sleep(0.02)
            continue
        if resp.status_code == 201:
            return str(resp.json()["sid"])
        assert resp.status_code == 503, resp.text
        time.sleep(0.02)
    raise AssertionError(f"{body} was never accepted")


def owners(data_dir: Path) -> dict[int, str]:
    """Bucket -> the owner id its lock file names (a cleanly released one names nobody)."""
    root = open_root(data_dir)
    found = {}
    for bucket in range(root.count):
        holder = read_record(root.lock_path(bucket))
        if holder is not None and holder.owner_id:
            found[bucket] = holder.owner_id
    return found


def received(sim_port: int) -> list[str]:
    """The bodies of every text the simulator accepted."""
    bodies = []
    for number in NUMBERS:
        resp = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/received", params={"number": number}, timeout=5.0)
        bodies += [m["content"] for m in resp.json()["messages"] if m["type"] == "text"]
    return bodies


def wait_received(sim_port: int, bodies: list[str], timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while set(bodies) - set(received(sim_port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return received(sim_port)


def close_handovers(sim_port: int, min_gap: float) -> list[str]:
    """From the simulator's per-sender log: a number passing from one process to another with less
    than ``min_gap`` seconds between their sends (two owners at once)."""
    found = []
    for number in NUMBERS:
        resp = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/senders", params={"number": number}, timeout=5.0)
        runs = resp.json()["runs"]
        for before, after in itertools.pairwise(runs):
            if after["first"] - before["last"] < min_gap:
                found.append(f"{number}: {before} then {after}")
    return found
