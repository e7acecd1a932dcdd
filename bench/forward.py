"""What a forwarded create costs: one hop from the front door that took it to its bucket's owner.

The owner (B) is a real daemon (``wadispatch run`` with ``[cluster]``, its own process,
owning its one bucket, three sandbox numbers whose rate limit keeps the actors idle, so
creates are what it does). The front door that took the request (A) is the forwarding
layer (``frontdoor.forwarding``) served by hypercorn in this process, every bucket owned
by B, so each create takes one hop A -> B: over B's lane (``lane``: one multiplexed
connection, straight into B's app) or, as before lanes, as HTTP to B's peer address over
A's keep-alive pool (``http``). The same creates go straight to B, through A over HTTP,
and through A over the lane, in alternating rounds:

- latency with one create in flight (p50, p99): the hop's time;
- creates per second with ``--concurrency`` in flight, B's CPU per 1,000 (the owner's
  work, plus the hop's owner side) and this process's CPU per 1,000 (the load generator,
  plus A when forwarding: the difference is A's cost per forwarded create).

Usage::

    .venv/bin/python -m bench.forward [--messages 3000] [--sequential 500] [--concurrency 32] [--rounds 2]

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from actors.supervisor import Supervisor
from bench import _harness as h
from dispatcher.core.buckets import Buckets
from dispatcher.core.dataroot import open_root
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import Store
from dispatcher.frontdoor.forwarding import Forwarder, PeerPool
from dispatcher.frontdoor.server import serve_frontdoor
from dispatcher.ownership.flock import read_record
from dispatcher.ownership.interface import Owner
from dispatcher.service.messaging import build_messaging

NUMBERS = 3


class _Elsewhere:
    """Every bucket is B's; ``lane`` says whether A sees B's lane (else only its HTTP address)."""

    owner_id = "A"

    def __init__(self, address: str, lane: str) -> None:
        self._http = Owner("B", address, 1)
        self._lane = Owner("B", address, 1, lane)
        self.lane = True

    def owner(self, bucket: int) -> Owner | None:
        return self._lane if self.lane else self._http


class _Behind:
    """A's own front door: never reached here (B owns everything); counts if it were."""

    def __init__(self) -> None:
        self.reached = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await h.serve_lifespan(receive, send)
        self.reached += 1
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _front_door_a(owners: _Elsewhere, tmp: Path) -> tuple[Forwarder, _Behind, PeerPool, Store]:
    """A's forwarding layer, with the rules and credentials a daemon would give it."""
    store = Store(tmp / "a", map_size=16 << 20)
    buckets = Buckets.single(store)
    messaging = build_messaging(
        buckets=buckets,
        wall=_Wall(),
        supervisor=Supervisor([]),
        numbers=[NumberInfo(f"+{h.number_digits(i)}", h.ACCOUNT, "s") for i in range(NUMBERS)],
        accounts={h.ACCOUNT: h.TOKEN},
    )
    behind = _Behind()
    pool = PeerPool(max_connections=64)
    forwarder = Forwarder(
        behind,
        buckets=buckets,
        directory=messaging.directory,
        owners=owners,
        rules=messaging.rules,
        auth=messaging.auth,
        pool=pool,
        max_request_bytes=1 << 20,
    )
    return forwarder, behind, pool, store


class _Wall:
    def now(self) -> float:
        return time.time()


async def _sequential(url: str, bodies: list[bytes]) -> list[float]:
    pool = H11Pool(url, max_connections=1)
    headers, path = h.front_headers(), h.create_path()
    times: list[float] = []
    try:
        for body in bodies:
            start = time.perf_counter()
            resp = await pool.request(b"POST", path, headers, body)
            times.append(time.perf_counter() - start)
            if resp.status != 201:
                raise SystemExit(f"create refused: {resp.status} {resp.body[:300]!r}")
    finally:
        await pool.aclose()
    return times


async def _measure(url: str, b_pid: int, args: argparse.Namespace) -> dict[str, float]:
    seq = await _sequential(url, h.create_bodies(NUMBERS, args.sequential))
    bodies = h.create_bodies(NUMBERS, args.messages)
    own0, b0 = time.process_time(), h.cpu_seconds(b_pid)
    elapsed = await h.post_creates(url, h.front_headers(), bodies, args.concurrency)
    own1, b1 = time.process_time(), h.cpu_seconds(b_pid)
    seq.sort()
    return {
        "p50_ms": 1000 * statistics.median(seq),
        "p99_ms": 1000 * seq[int(0.99 * (len(seq) - 1))],
        "creates_per_s": args.messages / elapsed,
        "owner_cpu_s_per_1k": (b1 - b0) * 1000 / args.messages,
        "here_cpu_s_per_1k": (own1 - own0) * 1000 / args.messages,
    }


def _lane_of(data_dir: Path) -> str:
    """B's lane, as its owner record names it (once it owns its bucket)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        holder = (
            read_record(open_root(data_dir).lock_path(0)) if (data_dir / "layout.json").exists() else None
        )
        if holder is not None and holder.lane:
            return holder.lane
        time.sleep(0.05)
    raise SystemExit("B never recorded its lane")


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = h.free_port()
        cfg = h.write_config(tmp / "b", port, h.free_port(), NUMBERS, rate=0.001, webhook_batch=50, burst=1)
        cfg.write_text(cfg.read_text() + "\n[cluster]\n")
        daemon = h.start_daemon(cfg)
        b_url = f"http://127.0.0.1:{port}"
        try:
            await h.wait_ready(b_url)
            owners = _Elsewhere(b_url, _lane_of(tmp / "b"))
        except BaseException:
            h.stop_process(daemon)
            raise
        forwarder, behind, pool, store = _front_door_a(owners, tmp)
        try:
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                binds = await nursery.start(
                    lambda task_status: serve_frontdoor(
                        forwarder, "127.0.0.1", 0, stop.wait, task_status=task_status
                    )
                )
                a_url = binds[0]
                rounds: dict[str, list[dict[str, float]]] = {"direct": [], "http": [], "lane": []}
                warm = argparse.Namespace(
                    **{
                        **vars(args),
                        "messages": min(300, args.messages),
                        "sequential": min(50, args.sequential),
                    }
                )
                for lane in (False, True):  # warm-up: B's connections from A, both ways
                    owners.lane = lane
                    await _measure(a_url, daemon.pid, warm)
                for _ in range(args.rounds):
                    rounds["direct"].append(await _measure(b_url, daemon.pid, args))
                    for mode in ("http", "lane"):
                        owners.lane = mode == "lane"
                        rounds[mode].append(await _measure(a_url, daemon.pid, args))
                stop.set()
        finally:
            await pool.aclose()
            store.close_env()
            h.stop_process(daemon)
    if behind.reached or forwarder.statistics.failed:
        raise SystemExit(f"A served {behind.reached} itself, {forwarder.statistics.failed} forwards failed")

    def median(mode: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds[mode]), 3)

    keys = ("p50_ms", "p99_ms", "creates_per_s", "owner_cpu_s_per_1k", "here_cpu_s_per_1k")
    result: dict[str, object] = {
        "bench": "forward",
        "messages": args.messages,
        "concurrency": args.concurrency,
    }
    for mode in rounds:
        for key in keys:
            result[f"{mode}_{key}"] = median(mode, key)
    for mode in ("http", "lane"):
        result[f"{mode}_hop_p50_ms"] = round(median(mode, "p50_ms") - median("direct", "p50_ms"), 3)
        result[f"{mode}_hop_cpu_ms_per_create"] = round(
            median(mode, "here_cpu_s_per_1k") - median("direct", "here_cpu_s_per_1k"), 3
        )
        result[f"{mode}_hop_owner_cpu_ms_per_create"] = round(
            median(mode, "owner_cpu_s_per_1k") - median("direct", "owner_cpu_s_per_1k"), 3
        )
    result["forwarded"] = forwarder.statistics.forwarded
    result["rounds"] = rounds
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parsed = parser.parse_args()
    for name in ("messages", "sequential", "concurrency", "rounds"):
        if getattr(parsed, name) < 1:
            parser.error(f"--{name} must be at least 1")
    out = trio.run(main, parsed)
    summary = {k: v for k, v in out.items() if k != "rounds"}
    sys.stderr.write(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(json.dumps(out) + "\n")
