"""Webhook ingest: batched On-Prem status webhooks applied by the daemon, in statuses per second.

The simulator (own process, its status webhooks off) and the daemon (own
process) are set up as in bench.e2e; ``--messages`` messages are accepted
through the batch route and delivered, their wamids read back from the
simulator. Then this process posts the ``sent``, ``delivered`` and ``read``
statuses of every message to the daemon's webhook route, ``--status-batch``
statuses per POST over ``--concurrency`` connections, and measures statuses
per second and per daemon CPU-second. A sample of the messages is fetched at
the end: each must read ``read`` (every status applied, none lost).

Usage::

    .venv/bin/python -m bench.webhooks --numbers 3 --messages 10000 --status-batch 500 [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from bench._harness import (
    ACCOUNT,
    BATCH_PATH,
    batch_bodies,
    cpu_seconds,
    free_port,
    front_headers,
    number_digits,
    register_numbers,
    rss_mb,
    sim_counts,
    start_daemon,
    start_simulator,
    stop_process,
    wait_ready,
    webhook_secret,
    write_config,
)

STATUSES = ("sent", "delivered", "read")
SAMPLE = 50


async def deliver(args: argparse.Namespace, url: str, sim_url: str) -> list[str]:
    """Accept and deliver the messages; returns their sids."""
    front = H11Pool(url, max_connections=4, request_timeout=60.0)
    headers = [front_headers()[0], (b"content-type", b"application/json")]
    sids: list[str] = []
    for body, _ in batch_bodies(args.numbers, args.messages, 1000):
        resp = await front.request(b"POST", BATCH_PATH, headers, body)
        if resp.status != 200:
            raise RuntimeError(f"batch refused: {resp.status} {resp.body[:200]!r}")
        sids += [r["sid"] for r in json.loads(resp.body)["results"]]
    await front.aclose()
    sim = H11Pool(sim_url, max_connections=1)
    with trio.fail_after(args.timeout):
        while (await sim_counts(sim))[0] < args.messages:  # noqa: ASYNC110 - a remote counter
            await trio.sleep(0.05)
    await sim.aclose()
    return sids


async def wamids(sim_url: str, numbers: int, messages: int) -> dict[int, list[tuple[str, str]]]:
    """(wamid, recipient) of every message, per number index."""
    sim = H11Pool(sim_url, max_connections=1, request_timeout=60.0)
    out: dict[int, list[tuple[str, str]]] = {}
    for i in range(numbers):
        query = urllib.parse.urlencode({"number": f"+{number_digits(i)}", "limit": messages})
        resp = await sim.request(b"GET", f"/_sim/received?{query}".encode(), [], b"")
        out[i] = [(m["id"], m["recipient"]) for m in json.loads(resp.body)["messages"]]
    await sim.aclose()
    return out


async def ingest(
    args: argparse.Namespace, url: str, pid: int, ids: dict[int, list[tuple[str, str]]]
) -> dict[str, Any]:
    now = str(int(time.time()))
    phases: list[list[tuple[bytes, bytes, int]]] = []
    for status in STATUSES:  # every sent, then every delivered, then every read: their real order
        posts = []
        for i, pairs in ids.items():
            path = f"/webhooks/onprem/{number_digits(i)}/{webhook_secret(i)}".encode()
            for lo in range(0, len(pairs), args.status_batch):
                chunk = pairs[lo : lo + args.status_batch]
                statuses = [
                    {"id": wamid, "status": status, "timestamp": now, "recipient_id": to}
                    for wamid, to in chunk
                ]
                posts.append((path, json.dumps({"statuses": statuses}).encode(), len(chunk)))
        phases.append(posts)
    front = H11Pool(url, max_connections=args.concurrency, request_timeout=60.0)
    headers = [(b"content-type", b"application/json")]
    errors = 0

    async def worker(posts: list[tuple[bytes, bytes, int]]) -> None:
        nonlocal errors
        while posts:
            path, body, count = posts.pop()
            resp = await front.request(b"POST", path, headers, body)
            if resp.status != 200:
                errors += count

    total = sum(count for posts in phases for *_, count in posts)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for posts in phases:
        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(worker, posts)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    await front.aclose()
    return {
        "statuses": total,
        "status_batch": args.status_batch,
        "errors": errors,
        "statuses_per_s": round(total / wall),
        "statuses_per_daemon_cpu_s": round(total / cpu) if cpu > 0 else 0,
        "daemon_rss_mb": round(rss_mb(pid), 1),
    }


async def verify(url: str, sids: list[str]) -> int:
    """How many of a random sample of the messages do not read ``read``."""
    front = H11Pool(url, max_connections=1)
    auth = front_headers()[0]
    wrong = 0
    for sid in random.Random(8).sample(sids, min(SAMPLE, len(sids))):
        path = f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json".encode()
        resp = await front.request(b"GET", path, [auth], b"")
        if resp.status != 200 or json.loads(resp.body)["status"] != "read":
            wrong += 1
    await front.aclose()
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=3)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--status-batch", type=int, default=500, help="statuses per webhook POST (1..1000)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args(argv)
    if args.numbers < 1 or args.messages < 1 or args.concurrency < 1 or not 1 <= args.status_batch <= 1000:
        parser.error("--numbers, --messages, --concurrency >= 1 and --status-batch in 1..1000")
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-webhooks-") as tmp:
        port, sim_port = free_port(), free_port()
        url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
        cfg = write_config(Path(tmp) / "data", port, sim_port, args.numbers, 100_000.0, 1, embedded=False)
        sim_proc = start_simulator(sim_port, "--status-delays", "off")  # this bench posts the statuses
        proc = None
        try:
            trio.run(register_numbers, sim_url, port, args.numbers, 100_000.0, 100_000)
            proc = start_daemon(cfg)
            trio.run(wait_ready, url)
            sids = trio.run(deliver, args, url, sim_url)
            ids = trio.run(wamids, sim_url, args.numbers, args.messages)
            if sum(len(pairs) for pairs in ids.values()) != args.messages:
                raise RuntimeError("the simulator does not list every delivered message")
            result = trio.run(ingest, args, url, proc.pid, ids)
            result["not_read_in_sample"] = trio.run(verify, url, sids)
            result["sample"] = min(SAMPLE, len(sids))
        finally:
            if proc is not None:
                stop_process(proc)
            stop_process(sim_proc)
    for key, value in result.items():
        print(f"{key:>26}: {value}", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 and result["not_read_in_sample"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
