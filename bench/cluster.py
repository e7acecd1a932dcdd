"""Many processes, many hosts: ``--workers`` on one host, and a 3-member etcd with 3 daemons.

``python -m bench.cluster`` runs both parts (under 10 minutes here), loopback only,
everything started here and stopped by PID, and prints one JSON line.

1. One host. The same load against ``wadispatch run --workers 1`` and then
   ``--workers 2`` (``--numbers`` numbers on a data root of 8 buckets, a simulator
   process that every worker sends to): single Twilio creates over ``--connections``
   keep-alive connections for ``--seconds`` through the shared port (``workers_ratio``:
   creates/s with 2 workers over 1), the same sent straight to each sender's owner
   (``direct_workers_ratio``, with the cores each process used; the workers' CPU per
   create both ways in ``cpu_ms_per_create``: a forwarded share costs the difference), then
   batch intake (``/v1/messages:batch``, one sender a batch) until every message
   reached the simulator (``batch_delivered_per_s``). A create that reaches a worker
   not owning its bucket is answered 503 (until forwarding routes it) and retried on
   a new connection, which the kernel may hand to the other worker: counted in
   ``misrouted``.
2. etcd (when ``etcd`` is installed): 3 members and 3 daemons on one data root (the
   shared volume of the supported deployments), creates at ``--rate`` spread over the
   daemons. ``kill -9`` of an owner: ``failover_gap_s`` is from the kill to its
   buckets' numbers sending again. ``SIGSTOP`` of an owner for 2 x TTL, then
   ``SIGCONT``. ``kill`` of the etcd leader: ``leader_pause_s``, the longest pause of
   all sending meanwhile. 2 of 3 members stopped: ``sent_without_quorum`` (sends
   later than the send window after the loss) and ``resumed_after_s`` once they are
   back. ``owner_overlap``: from the simulator's per-sender log (runs of sends by
   User-Agent, which names the process), hand-overs of a number between processes
   closer than half the grace: two owners sending at once. ``duplicates``: bodies the
   simulator received twice; ``duplicates_explained``: those in flight at a kill (the
   killed daemon never logged the answer) or a SIGSTOP (answered only after SIGCONT).

``lost`` counts accepted messages the simulator never received, over both parts.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from actors.http.pool import H11Pool
from bench._harness import ROOT, cpu_seconds, free_port, wait_ready
from dispatcher.core.bucketing import bucket_of
from dispatcher.core.dataroot import open_root
from dispatcher.ownership.flock import read_record
from tests.helpers.etcd import ETCD, EtcdCluster, cluster_section
from tests.helpers.processes import ACCOUNT, REQUEST_TIMEOUT, TOKEN, config_text
from tests.helpers.processes import start_simulator as start_process_simulator
from tests.helpers.processes import stop as stop_process

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
TTL, MARGIN, GRACE = 3.0, 0.5, 1.0
ETCD_BUCKETS = 8


def number(i: int) -> str:
    return f"+1555100{i:04d}"


def front_headers() -> list[tuple[bytes, bytes]]:
    auth = b"Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
    return [(b"authorization", auth), (b"content-type", b"application/x-www-form-urlencoded")]


def numbers_of(count: int) -> list[str]:
    return [number(i) for i in range(count)]


def write_config(
    path: Path, data_dir: Path, port: int, sim_port: int, numbers: int, *, buckets: int, **options: str
) -> Path:
    """The bench daemon: ``numbers`` numbers on the simulator process, the admin API on."""
    admin = f'[admin]\ntoken = {{ value = "{ADMIN_TOKEN}" }}'
    text = config_text(
        data_dir,
        port,
        sim_port,
        numbers=numbers_of(numbers),
        buckets=buckets,
        extra=admin,
        rate=5000.0,
        **options,
    )
    path.write_text(text)
    return path


def start_simulator(sim_port: int, numbers: int) -> subprocess.Popen[bytes]:
    return start_process_simulator(sim_port, numbers_of(numbers))


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process would never handle the SIGTERM
    stop_process(proc)


async def received(sim_url: str, numbers: int) -> list[tuple[str, str]]:
    """(number, body) of every text the simulator accepted, in arrival order per number."""
    pool = H11Pool(sim_url, max_connections=1, request_timeout=30.0)
    out: list[tuple[str, str]] = []
    try:
        for i in range(numbers):
            query = urllib.parse.urlencode({"number": number(i)})
            resp = await pool.request(b"GET", f"/_sim/received?{query}".encode(), [], b"")
            out += [
                (number(i), m["content"]) for m in json.loads(resp.body)["messages"] if m["type"] == "text"
            ]
    finally:
        await pool.aclose()
    return out


async def accepted_by_number(pool: H11Pool) -> dict[str, int]:
    resp = await pool.request(b"GET", b"/_sim/counters", [], b"")
    return {n: c["accepted"] for n, c in json.loads(resp.body)["numbers"].items()}


@attrs.define
class Load:
    """Creates spread over front doors; a 503 is retried on a new connection (maybe another door)."""

    urls: list[str]
    numbers: int
    accepted: dict[str, tuple[str, str]] = attrs.Factory(dict)  # body -> (sid, number)
    accepted_at: dict[str, tuple[float, str]] = attrs.Factory(dict)  # body -> (when, front door)
    misrouted: int = 0
    failed: int = 0
    counter: int = 0
    # Sender -> the front door to use (its bucket owner's peer address); None: any of ``urls``.
    route: dict[str, str] | None = None

    async def create(self, pools: dict[str, H11Pool], body: str, frm: str, deadline: float) -> bool:
        form = urllib.parse.urlencode(
            {"From": f"whatsapp:{frm}", "To": "whatsapp:+15559990000", "Body": body}
        )
        path = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()
        url = self.route[frm] if self.route else random.choice(self.urls)
        while trio.current_time() < deadline:
            pool = pools.get(url) or pools.setdefault(
                url, H11Pool(url, max_connections=1, request_timeout=10.0)
            )
            try:
                resp = await pool.request(b"POST", path, front_headers(), form.encode())
            except Exception:
                resp = None
            if resp is not None and resp.status == 201:
                self.accepted[body] = (json.loads(resp.body)["sid"], frm)
                self.accepted_at[body] = (time.time(), url)
                return True
            self.misrouted += resp is not None and resp.status == 503
            stale = pools.pop(url, None)
            if stale is not None:
                await stale.aclose()  # a new connection: the kernel may pick another worker
            url = random.choice(self.urls)
            await trio.sleep(0.01 if resp is not None else 0.1)
        self.failed += 1
        return False

    async def closed_loop(self, connections: int, seconds: float, tag: str) -> float:
        """As fast as ``connections`` clients go for ``seconds``: creates accepted per second."""
        end = trio.current_time() + seconds
        before = len(self.accepted)

        async def client(k: int) -> None:
            pools: dict[str, H11Pool] = {}
            try:
                while trio.current_time() < end:
                    self.counter += 1
                    i = self.counter
                    await self.create(pools, f"{tag}-{i}", number(i % self.numbers), end + 30)
            finally:
                for pool in pools.values():
                    await pool.aclose()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(connections):
                nursery.start_soon(client, k)
        return (len(self.accepted) - before) / (time.perf_counter() - start)

    async def open_loop(self, rate: float, stop: trio.Event, tag: str) -> None:
        """``rate`` creates a second until ``stop``, each in its own task (a slow one holds no other)."""
        async with trio.open_nursery() as nursery:
            pools_by_task: list[dict[str, H11Pool]] = [{} for _ in range(64)]
            i = 0
            start = trio.current_time()
            while not stop.is_set():
                i += 1
                await trio.sleep_until(start + i / rate)
                pools = pools_by_task[i % 64]
                nursery.start_soon(
                    self.create, pools, f"{tag}-{i}", number(i % self.numbers), trio.current_time() + 60
                )
        for pools in pools_by_task:
            for pool in pools.values():
                await pool.aclose()


async def batch_delivered_per_s(url: str, sim_url: str, numbers: int, messages: int) -> tuple[float, int]:
    """Batches of 100, one sender each, until all reached the simulator: (delivered/s, misrouted)."""
    sim = H11Pool(sim_url, max_connections=1)
    base = sum((await accepted_by_number(sim)).values())
    headers = [front_headers()[0], (b"content-type", b"application/json")]
    misrouted = 0
    next_batch = 0
    batches = messages // 100
    start = time.perf_counter()

    async def client() -> None:
        nonlocal next_batch, misrouted
        pool = H11Pool(url, max_connections=1, request_timeout=30.0)
        while next_batch < batches:
            k = next_batch
            next_batch += 1
            frm = number(k % numbers)
            body = json.dumps(
                [
                    {"from": f"whatsapp:{frm}", "to": f"whatsapp:+1555888{j:04d}", "body": f"b{k}-{j}"}
                    for j in range(100)
                ]
            ).encode()
            while True:
                resp = await pool.request(b"POST", b"/v1/messages:batch", headers, body)
                if resp.status == 200 and json.loads(resp.body)["accepted"] == 100:
                    break
                misrouted += 1
                await pool.aclose()
                pool = H11Pool(url, max_connections=1, request_timeout=30.0)
        await pool.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(client)
    with trio.move_on_after(120):
        while sum((await accepted_by_number(sim)).values()) - base < messages:  # noqa: ASYNC110 - another process
            await trio.sleep(0.02)
    delivered = sum((await accepted_by_number(sim)).values()) - base
    await sim.aclose()
    return delivered / (time.perf_counter() - start), misrouted


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the workers of ``--workers``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def owner_addresses(data_dir: Path, numbers: int) -> dict[str, str]:
    """Sender -> the peer address of the worker owning its bucket (from the buckets' lock files)."""
    root = open_root(data_dir)
    out = {}
    for i in range(numbers):
        holder = read_record(root.lock_path(bucket_of(number(i), root.count)))
        if holder is None or not holder.owner_id:
            raise RuntimeError(f"bucket of {number(i)} has no owner")
        out[number(i)] = holder.address
    return out


async def settled(data_dir: Path, workers: int, timeout: float = 30.0) -> None:
    """Every bucket owned, by ``workers`` processes (a loaded machine starts the second one late:
    measuring while buckets move counts 503s and routes to stale owners)."""
    root = open_root(data_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holders = [read_record(root.lock_path(b)) for b in range(root.count)]
        owners = {h.owner_id for h in holders if h is not None and h.owner_id}
        if all(h is not None and h.owner_id for h in holders) and len(owners) == workers:
            await trio.sleep(0.5)  # (the others' view of who owns what: one flock poll or two)
            return
        await trio.sleep(0.1)
    raise RuntimeError(f"the buckets of {data_dir} did not settle on {workers} workers in {timeout:g} s")


def start_workers(cfg: Path, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg), "--workers", str(workers)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


async def all_received(load: Load, sim_url: str, numbers: int, timeout: float = 60.0) -> None:
    """Until the simulator has every accepted message (or ``timeout``: the rest counts as lost)."""
    with trio.move_on_after(timeout):
        while set(load.accepted) - {body for _, body in await received(sim_url, numbers)}:  # noqa: ASYNC110
            await trio.sleep(0.2)


async def one_host(work: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    port, sim_port = free_port(), free_port()
    sim = start_simulator(sim_port, args.numbers)
    run = work / f"workers{workers}"
    run.mkdir()
    cfg = write_config(
        run / "dispatcher.toml", run / "data", port, sim_port, args.numbers, buckets=8, cluster="[cluster]\n"
    )
    daemon = start_workers(cfg, workers)
    url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
    try:
        await wait_ready(url)
        await wait_ready(sim_url, b"/_sim/counters")
        await settled(run / "data", workers)  # every worker claimed its share
        load = Load([url], args.numbers)
        await load.closed_loop(args.connections, 1.0, f"warm{workers}")  # warm-up, not counted
        pids = [daemon.pid, *children(daemon.pid)]
        shared0, wall0 = cpu_of(pids), time.perf_counter()
        creates = await load.closed_loop(args.connections, args.seconds, f"w{workers}")
        shared_ms = 1000 * (cpu_of(pids) - shared0) / (creates * (time.perf_counter() - wall0))
        # The same load sent straight to each sender's owner (its peer port): the workers' own
        # scaling, with no misrouted request or forwarding hop.
        load.route = owner_addresses(run / "data", args.numbers)
        cpu0, sim0, own0, wall0 = cpu_of(pids), cpu_seconds(sim.pid), time.process_time(), time.perf_counter()
        direct = await load.closed_loop(args.connections, args.seconds, f"d{workers}")
        wall = time.perf_counter() - wall0
        direct_ms = 1000 * (cpu_of(pids) - cpu0) / (direct * wall)
        load.route = None
        cpu = {
            "daemon_cores": round((cpu_of(pids) - cpu0) / wall, 2),
            "simulator_cores": round((cpu_seconds(sim.pid) - sim0) / wall, 2),
            "load_generator_cores": round((time.process_time() - own0) / wall, 2),
        }
        delivered, batch_misrouted = await batch_delivered_per_s(
            url, sim_url, args.numbers, args.batch_messages
        )
        await all_received(load, sim_url, args.numbers)
        got = {body for _, body in await received(sim_url, args.numbers)}
        return {
            "creates_per_s": round(creates, 1),
            "direct_creates_per_s": round(direct, 1),
            "direct_cpu": cpu,
            # The workers' CPU per create (ms): through the shared port (a forwarded share
            # included), and straight to the owners.
            "cpu_ms_per_create": {"shared": round(shared_ms, 3), "direct": round(direct_ms, 3)},
            "batch_delivered_per_s": round(delivered, 1),
            "misrouted": load.misrouted + batch_misrouted,
            "lost": len(set(load.accepted) - got),
        }
    finally:
        stop(daemon)
        stop(sim)


# -- etcd ------------------------------------------------------------------------------


@attrs.define
class Daemon:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = attrs.Factory(list)

    def start(self, cfg: Path) -> None:
        path = self.log.with_name(f"{self.name}-{len(self.logs)}.log")
        self.logs.append(path)
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg)], cwd=ROOT, stdout=out
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def log_events(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


def when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def owned_buckets(daemon: Daemon) -> list[int]:
    pool = H11Pool(daemon.url, max_connections=1)
    try:
        resp = await pool.request(
            b"GET", b"/admin/v1/status", [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())], b""
        )
        return [b["bucket"] for b in json.loads(resp.body)["buckets"] if b["owned"]]
    except Exception:
        return []
    finally:
        await pool.aclose()


async def first_owner(daemons: list[Daemon]) -> Daemon:
    """The first daemon that owns a bucket now."""
    for d in daemons:
        if await owned_buckets(d):
            return d
    raise RuntimeError("no daemon owns a bucket")


@attrs.define
class Timeline:
    """The simulator's accepted count per number, every 20 ms."""

    samples: list[tuple[float, dict[str, int]]] = attrs.Factory(list)

    async def run(self, sim_url: str, stop: trio.Event) -> None:
        pool = H11Pool(sim_url, max_connections=1)
        try:
            while not stop.is_set():
                self.samples.append((time.time(), await accepted_by_number(pool)))
                await trio.sleep(0.02)
        finally:
            await pool.aclose()

    def first_send_after(self, numbers: list[str], after: float, settle: float = 0.2) -> float | None:
        """When ``numbers`` sent again after ``after``: requests already on the wire then (landing
        within ``settle``) are not a new send."""
        base = None
        for at, counts in self.samples:
            total = sum(counts.get(n, 0) for n in numbers)
            if at <= after + settle:
                base = total
            elif base is not None and total > base:
                return at
        return None

    def longest_pause(self, start: float, end: float) -> float:
        last_change, longest, previous = start, 0.0, None
        for at, counts in self.samples:
            if at < start or at > end:
                continue
            total = sum(counts.values())
            if previous is not None and total > previous:
                longest = max(longest, at - last_change)
                last_change = at
            previous = total
        return round(max(longest, (end - last_change) if previous is not None else 0.0), 3)

    def sent_between(self, start: float, end: float) -> int:
        inside = [sum(c.values()) for at, c in self.samples if start <= at <= end]
        return inside[-1] - inside[0] if len(inside) > 1 else 0


async def overlaps(sim_url: str, numbers: int, min_gap: float) -> tuple[int, list[str]]:
    """From the simulator's per-sender log (runs of sends by User-Agent, in arrival order): hand-overs
    of a number from one process to another closer than ``min_gap`` (a new owner waits its grace, so
    a closer one means two owners sent at once). Returns (how many, what they were)."""
    pool = H11Pool(sim_url, max_connections=1)
    found: list[str] = []
    try:
        for i in range(numbers):
            query = urllib.parse.urlencode({"number": number(i)}).encode()
            runs = json.loads((await pool.request(b"GET", b"/_sim/senders?" + query, [], b"")).body)["runs"]
            for before, after in itertools.pairwise(runs):
                if after["first"] - before["last"] < min_gap:
                    found.append(f"{number(i)}: {before} then {after}")
    finally:
        await pool.aclose()
    return len(found), found


async def etcd_part(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cluster = EtcdCluster(work / "etcd", heartbeat_ms=100, election_ms=1000)
    sim_port = free_port()
    sim = start_simulator(sim_port, args.numbers)
    sim_url = f"http://127.0.0.1:{sim_port}"
    daemons = [Daemon(f"d{i}", free_port(), work / f"d{i}.log") for i in range(3)]
    configs: dict[str, Path] = {}
    figures: dict[str, Any] = {}
    try:
        cluster.start()
        for d in daemons:
            section = cluster_section(
                cluster.endpoints, name="bench", ttl=TTL, grace=GRACE, margin=MARGIN, owner_id=d.name
            )
            configs[d.name] = write_config(
                work / f"{d.name}.toml",
                work / "data",
                d.port,
                sim_port,
                args.numbers,
                buckets=ETCD_BUCKETS,
                cluster=section,
                level="info",
            )
        for d in daemons:  # one after another: the first creates the data root
            d.start(configs[d.name])
            await wait_ready(d.url)
        await trio.sleep(2 * TTL)  # claims settle to the fair share
        load = Load([d.url for d in daemons], args.numbers)
        stop_load, stop_timeline = trio.Event(), trio.Event()
        timeline = Timeline()
        bucket_of = {number(i): bucket_index(number(i), ETCD_BUCKETS) for i in range(args.numbers)}
        killed_at: list[tuple[str, float]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timeline.run, sim_url, stop_timeline)
            nursery.start_soon(load.open_loop, args.rate, stop_load, "etcd")
            await trio.sleep(3.0)
            # 1. kill -9 an owner.
            victim = await first_owner(daemons)
            lost_buckets = await owned_buckets(victim)
            victim_numbers = [n for n, b in bucket_of.items() if b in lost_buckets]
            assert victim.proc is not None
            victim.proc.kill()
            kill_time = time.time()
            killed_at.append((victim.name, kill_time))
            await trio.sleep(TTL + GRACE + 3.0)
            first = timeline.first_send_after(victim_numbers, kill_time)
            figures["failover_gap_s"] = None if first is None else round(first - kill_time, 3)
            victim.start(configs[victim.name])
            await wait_ready(victim.url)
            await trio.sleep(2 * TTL)
            # 2. SIGSTOP an owner for 2 x TTL.
            paused = await first_owner(daemons)
            paused_buckets = await owned_buckets(paused)
            assert paused.proc is not None
            os.kill(paused.proc.pid, signal.SIGSTOP)
            await trio.sleep(2 * TTL)
            os.kill(paused.proc.pid, signal.SIGCONT)
            resumed_at = time.time()
            await trio.sleep(2 * TTL)
            # 3. kill the etcd leader.
            leader = cluster.leader()
            started = time.time()
            if leader is not None:
                cluster.stop_member(leader)
            await trio.sleep(5.0)
            figures["leader_pause_s"] = timeline.longest_pause(started, time.time())
            if leader is not None:
                cluster.start_member(leader)
            await trio.sleep(3.0)
            # 4. stop 2 of 3 members: every daemon stops sending, then all resume.
            leader = cluster.leader() or 0
            gone = [leader, (leader + 1) % 3]
            for i in gone:
                cluster.stop_member(i)
            lost_quorum = time.time()
            await trio.sleep(6.0)
            window = TTL - MARGIN - REQUEST_TIMEOUT
            figures["sent_without_quorum"] = timeline.sent_between(lost_quorum + window + 0.2, time.time())
            for i in gone:
                cluster.start_member(i)
            back = time.time()
            # Until sending resumes (etcd's members elect a leader, then the daemons renew or
            # rejoin and wait their grace): a loaded machine has taken it 7 s, so up to 30 s.
            resumed = None
            with trio.move_on_after(30.0):
                while (resumed := timeline.first_send_after(list(bucket_of), back)) is None:  # noqa: ASYNC110
                    await trio.sleep(0.25)
            await trio.sleep(2.0)  # and a little sending after it
            figures["resumed_after_s"] = None if resumed is None else round(resumed - back, 3)
            stop_load.set()
            await trio.sleep(0.5)
            await all_received(load, sim_url, args.numbers)
            stop_timeline.set()
        got = await received(sim_url, args.numbers)
        bodies = [body for _, body in got]
        seen: set[str] = set()
        duplicated = []
        for body in bodies:
            if body in seen and body in load.accepted:
                duplicated.append(body)
            seen.add(body)
        logged_sent = {
            e.get("sid")
            for d in daemons
            for p in d.logs
            for e in log_events(p)
            if e.get("event") == "message.sent"
        }
        # A duplicate is explained by a send in flight when its process was killed (it never logged
        # the answer) or stopped (it logged the answer only after it woke up).
        late = {
            e.get("sid")
            for path in paused.logs
            for e in log_events(path)
            if e.get("event") == "message.sent" and when(e) >= resumed_at
        }
        explained = 0
        for body in duplicated:
            sid, frm = load.accepted[body]
            bucket = bucket_of[frm]
            explained += (bucket in lost_buckets and sid not in logged_sent) or (
                bucket in paused_buckets and sid in late
            )
        overlap, overlap_runs = await overlaps(sim_url, args.numbers, GRACE / 2)
        for line in overlap_runs:
            sys.stderr.write(f"overlap {line}\n")
        for body in duplicated:
            sid, frm = load.accepted[body]
            logged = [
                (d.name, path.name)
                for d in daemons
                for path in d.logs
                for e in log_events(path)
                if e.get("event") == "message.sent" and e.get("sid") == sid
            ]
            sys.stderr.write(
                f"duplicate {body} {sid} {frm} bucket {bucket_of[frm]}: sent logged by {logged}\n"
            )
        sys.stderr.write(f"killed {killed_at}, its buckets {lost_buckets}\n")
        stopped_at = resumed_at - 2 * TTL
        sys.stderr.write(f"stopped {paused.name} at {stopped_at:.3f}, its buckets {paused_buckets}\n")
        for body in sorted(set(load.accepted) - seen):
            sid, frm = load.accepted[body]
            at, door = load.accepted_at[body]
            events = [
                (path.name, e.get("event"), e.get("timestamp"))
                for d in daemons
                for path in d.logs
                for e in log_events(path)
                if e.get("sid") == sid
            ]
            sys.stderr.write(
                f"lost {body} {sid} {frm} bucket {bucket_of[frm]} accepted {at:.3f} by {door}: {events}\n"
            )
        figures.update(
            lost=len(set(load.accepted) - seen),
            accepted=len(load.accepted),
            duplicates=len(duplicated),
            duplicates_explained=explained,
            owner_overlap=overlap,
            etcd_misrouted=load.misrouted,
            create_failed=load.failed,
        )
        return figures
    finally:
        for d in daemons:
            if d.proc is not None:
                stop(d.proc)
        stop(sim)
        cluster.stop()


def bucket_index(num: str, buckets: int) -> int:
    return bucket_of(num, buckets)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        return await run_in(args.keep, args)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        return await run_in(Path(tmp), args)


async def run_in(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"lost": 0}
    if not args.etcd_only:
        one = await one_host(work, 1, args)
        two = await one_host(work, 2, args)
        result.update(
            workers_ratio=_ratio(two["creates_per_s"], one["creates_per_s"]),
            creates_per_s_1=one["creates_per_s"],
            creates_per_s_2=two["creates_per_s"],
            direct_workers_ratio=_ratio(two["direct_creates_per_s"], one["direct_creates_per_s"]),
            direct_creates_per_s_1=one["direct_creates_per_s"],
            direct_creates_per_s_2=two["direct_creates_per_s"],
            direct_cpu_1=one["direct_cpu"],
            direct_cpu_2=two["direct_cpu"],
            cpu_ms_per_create_1=one["cpu_ms_per_create"],
            cpu_ms_per_create_2=two["cpu_ms_per_create"],
            batch_delivered_per_s_1=one["batch_delivered_per_s"],
            batch_delivered_per_s_2=two["batch_delivered_per_s"],
            misrouted_2=two["misrouted"],
            lost_one_host=one["lost"] + two["lost"],
        )
    etcd: dict[str, Any] = {}
    if ETCD is not None and not args.no_etcd:
        etcd = await etcd_part(work, args)
    result.update(
        etcd=bool(etcd),
        duplicates=etcd.get("duplicates", 0),
        duplicates_explained=etcd.get("duplicates_explained", 0),
        owner_overlap=etcd.get("owner_overlap", 0),
        failover_gap_s=etcd.get("failover_gap_s"),
        leader_pause_s=etcd.get("leader_pause_s"),
        sent_without_quorum=etcd.get("sent_without_quorum"),
        resumed_after_s=etcd.get("resumed_after_s"),
        etcd_accepted=etcd.get("accepted"),
        etcd_misrouted=etcd.get("etcd_misrouted"),
        etcd_create_failed=etcd.get("create_failed"),
        lost_etcd=etcd.get("lost"),
    )
    result["lost"] = result.get("lost_one_host", 0) + etcd.get("lost", 0)
    return result


def _ratio(two: float, one: float) -> float | None:
    return round(two / one, 2) if one else None


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--numbers", type=int, default=16)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch-messages", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=100.0, help="creates/s during the etcd part")
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument("--etcd-only", action="store_true", help="skip the one-host part")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (logs, data)")
    args = parser.parse_args(argv)
    result = trio.run(main, args)
    sys.stderr.write(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    cli()
