"""A backlog bigger than memory: RSS, restart-to-first-send, drain rate and order with millions pending.

Two runs of ``wadispatch run`` (its own process) against the Cloud simulator (its
own process), on Cloud numbers at ``--rate`` messages/s each:

* *small*: an outbox holding only what the numbers send in the measured window
  (a few seconds' worth), the reference for memory and delivered/s;
* *full*: ``--pending`` messages (5,000,000 by default) over ``--numbers`` numbers.

Both data dirs are filled offline through the store's own batch path
(``ledger.accept_many`` in group commits of ``FILL_BATCH`` records: the write
the front door's ``/v1/messages:batch`` makes), not over HTTP: 5,000,000 HTTP
creates would take most of an hour on this machine, and the figures measured
here are the daemon's, after the fill. Every number sends to ``--recipients``
recipients, plus one chatty recipient that gets ``--chatty-share`` of the
number's messages: far above Meta's pair rate (one message per 6 s, bursts of
45), so it spends the run parked, and must not slow the others.

The daemon is started on the filled data dir (a restart with a full backlog),
``restart_to_first_send_s`` is the time from the process start to the first
message reaching the simulator; then it drains for ``--drain-seconds`` after a
warm-up, sampling its anonymous RSS (``RssAnon``: the heap, not LMDB's file-backed
map) and the simulator's count. ``drain_ratio`` is the full run's delivered/s
over the small run's. After the daemon stopped, its LMDB is read back:
``order_violations`` counts messages sent before an earlier message (lower
outbox seq) to the same recipient from the same number that was sent later or
is still pending.

Bounded: the fill, two drains of ``--drain-seconds`` and the read-back; it stops by
itself. Usage::

    .venv/bin/python -m bench.backlog [--pending 5000000] [--numbers 10] [--recipients 2000]

Prints progress on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import trio

from actors.http.pool import H11Pool
from bench import cloud
from bench._harness import (
    ACCOUNT,
    free_port,
    number_digits,
    register_cloud_numbers,
    start_daemon,
    start_simulator,
    stop_process,
    wait_ready,
    write_config,
)
from dispatcher.core import ledger, logs
from dispatcher.core.bucketing import slot_of
from dispatcher.core.models import MessageRecord, new_sids
from dispatcher.core.store import Store

FILL_BATCH = 5_000  # records per accept_many write
FILL_CONCURRENCY = 4  # writes queued at once, so group commits overlap the next batch's encoding
CHATTY = "+16509999999"
WARM_UP = 3.0  # seconds after the first send before the drain is measured
POLL = 0.02  # seconds between simulator polls while waiting for the first send
START_TIMEOUT = 900.0  # seconds a start may take (the whole outbox loaded into memory, before issue 15)


def recipient(k: int, recipients: int, chatty_every: int) -> str:
    """The recipient of a number's ``k``-th message: the chatty one every ``chatty_every``-th."""
    if chatty_every and k % chatty_every == 0:
        return CHATTY
    return f"+1650{k % recipients:07d}"


async def fill(data_dir: Path, args: argparse.Namespace, pending: int) -> float:
    """``pending`` queued messages round-robin over the numbers; returns the seconds taken."""
    store = Store(data_dir, map_size=max(1 << 30, pending * 1600), map_max=1 << 40)
    chatty_every = round(1 / args.chatty_share) if args.chatty_share > 0 else 0
    numbers = [f"+{number_digits(i)}" for i in range(args.numbers)]
    slots = [slot_of(number) for number in numbers]
    began = time.perf_counter()
    limiter = trio.Semaphore(FILL_CONCURRENCY)

    async def write(lo: int, hi: int) -> None:
        try:
            now = time.time()
            sids = new_sids("SM", [slots[i % args.numbers] for i in range(lo, hi)])
            records = [
                MessageRecord(
                    sid=sids[i - lo],
                    account_sid=ACCOUNT,
                    from_number=numbers[i % args.numbers],
                    to_number=recipient(i // args.numbers, args.recipients, chatty_every),
                    body=f"Your code is {i % 1_000_000:06d}. It expires in 10 minutes.",
                    date_created=now,
                    date_updated=now,
                )
                for i in range(lo, hi)
            ]
            await store.write(ledger.accept_many(records))
        finally:
            limiter.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        async with trio.open_nursery() as writers:
            for lo in range(0, pending, FILL_BATCH):
                await limiter.acquire()
                writers.start_soon(write, lo, min(pending, lo + FILL_BATCH))
                if lo and lo % 500_000 == 0:
                    _say(f"  filled {lo:,} ({time.perf_counter() - began:.0f} s)")
        store.close()
    store.close_env()
    return time.perf_counter() - began


def rss_anon_mb(pid: int) -> float:
    """The process's anonymous resident memory (heap and stacks; LMDB's map is file-backed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def accepted(pool: H11Pool, numbers: int) -> int:
    return (await cloud.sim_counts(pool, numbers))[0]


async def drain(
    sim_url: str, proc: subprocess.Popen[bytes], started: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Time to the first send, then delivered/s and peak anonymous RSS over the measured drain."""
    pool = H11Pool(sim_url, max_connections=1)
    try:
        with trio.fail_after(START_TIMEOUT):
            while (first := await accepted(pool, args.numbers)) == 0:
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited ({proc.returncode}) before sending")
                await trio.sleep(POLL)
        to_first = time.perf_counter() - started
        await trio.sleep(WARM_UP)
        base, t0 = await accepted(pool, args.numbers), time.perf_counter()
        peak = rss_anon_mb(proc.pid)
        deadline = t0 + args.drain_seconds
        while time.perf_counter() < deadline:
            await trio.sleep(0.5)
            peak = max(peak, rss_anon_mb(proc.pid))
        count, t1 = await accepted(pool, args.numbers), time.perf_counter()
    finally:
        await pool.aclose()
    return {
        "first_send_s": round(to_first, 3),
        "delivered_per_s": round((count - base) / (t1 - t0), 1),
        "rss_anon_mb": round(peak, 1),
        "first_count": first,
    }


def read_back(data_dir: Path) -> dict[str, int]:
    """Order violations and what was sent, from the stopped daemon's LMDB."""
    decoder = msgspec.msgpack.Decoder(MessageRecord)
    # (number, recipient) -> [(seq, sent at or None)]
    seen: dict[tuple[str, str], list[tuple[int, float | None]]] = defaultdict(list)
    sent = chatty_sent = 0
    env = lmdb.open(str(data_dir), readonly=True, lock=False, max_dbs=32)
    try:
        with env.begin(db=env.open_db(b"messages", create=False)) as txn:
            for _, raw in txn.cursor():
                record = decoder.decode(raw)
                if record.outbox_seq is None:
                    continue
                done = record.date_sent if record.status != "queued" else None
                seen[record.from_number, record.to_number].append((record.outbox_seq, done))
                if done is not None:
                    sent += 1
                    chatty_sent += record.to_number == CHATTY
    finally:
        env.close()
    violations = 0
    for messages in seen.values():
        messages.sort()
        last = 0.0
        waiting = False  # an earlier message of the pair is still pending
        for _, when in messages:
            if when is None:
                waiting = True
            elif waiting or when < last:
                violations += 1
            else:
                last = when
    return {"sent": sent, "chatty_sent": chatty_sent, "order_violations": violations}


def run(tmp: Path, name: str, args: argparse.Namespace, pending: int) -> dict[str, Any]:
    """Fill a data dir with ``pending`` messages, then start the daemon on it and drain."""
    data = tmp / name / "data"
    data.mkdir(parents=True)
    fill_s = trio.run(fill, data, args, pending)
    _say(f"{name}: filled {pending:,} pending in {fill_s:.1f} s")
    port, sim_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    cfg = write_config(data, port, sim_port, args.numbers, args.rate, 1, embedded=False, channel="cloud")
    sim = start_simulator(sim_port, "--webhook-batch", "1")
    proc = None
    try:
        sim_numbers = [
            cloud.sim_number(i, number_digits(i), None, args.rate, int(args.rate))
            for i in range(args.numbers)
        ]
        trio.run(register_cloud_numbers, sim_url, sim_numbers)
        started = time.perf_counter()
        proc = start_daemon(cfg)
        trio.run(wait_ready, f"http://127.0.0.1:{port}", b"/healthz", START_TIMEOUT)
        ready_s = time.perf_counter() - started
        result = trio.run(drain, sim_url, proc, started, args)
        result["ready_s"] = round(ready_s, 3)
    finally:
        if proc is not None:
            stop_process(proc)
        stop_process(sim)
    result.update(read_back(data))
    result["fill_s"] = round(fill_s, 1)
    result["pending"] = pending
    _say(f"{name}: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=5_000_000, help="messages in the full outbox")
    parser.add_argument("--numbers", type=int, default=10)
    parser.add_argument(
        "--recipients", type=int, default=2_000, help="recipients per number (plus the chatty one)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="each number's throughput, messages/s")
    parser.add_argument(
        "--chatty-share", type=float, default=0.05, help="share of messages to the chatty recipient"
    )
    parser.add_argument("--drain-seconds", type=float, default=20.0, help="measured drain, after a warm-up")
    args = parser.parse_args(argv)
    if (
        args.pending < 1
        or args.numbers < 1
        or args.recipients < 1
        or args.rate <= 0
        or args.drain_seconds <= 0
    ):
        parser.error("--pending, --numbers, --recipients must be >= 1; --rate, --drain-seconds > 0")
    if not 0 <= args.chatty_share < 1:
        parser.error("--chatty-share must be in [0, 1)")
    logs.configure("error")
    # The small run holds what the measured drain sends to the other recipients, and a margin.
    small = int(args.rate * args.numbers * (args.drain_seconds + WARM_UP + 10) / (1 - args.chatty_share))
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-backlog-") as tmp:
        empty = run(Path(tmp), "small", args, min(small, args.pending))
        full = run(Path(tmp), "full", args, args.pending)
    result = {
        "pending": args.pending,
        "numbers": args.numbers,
        "recipients": args.recipients,
        "rate_per_number": args.rate,
        "rss_anon_empty_mb": empty["rss_anon_mb"],
        "rss_anon_full_mb": full["rss_anon_mb"],
        "rss_anon_delta_mb": round(full["rss_anon_mb"] - empty["rss_anon_mb"], 1),
        "restart_to_first_send_s": full["first_send_s"],
        "restart_to_ready_s": full["ready_s"],
        "small_first_send_s": empty["first_send_s"],
        "delivered_per_s_small": empty["delivered_per_s"],
        "delivered_per_s_full": full["delivered_per_s"],
        "drain_ratio": round(full["delivered_per_s"] / empty["delivered_per_s"], 3),
        "chatty_sent_small": empty["chatty_sent"],
        "chatty_sent_full": full["chatty_sent"],
        "order_violations": empty["order_violations"] + full["order_violations"],
        "fill_s": full["fill_s"],
    }
    print(json.dumps(result), flush=True)
    return 0 if result["order_violations"] == 0 else 1


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
