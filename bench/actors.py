"""Memory and start-up cost of number actors: RSS per idle actor, spawn time, outbox recovery time.

Both phases run the daemon's own path: ``build_actor`` (H11Pool, TokenManager,
TokenBucket) for every number and ``Supervisor.run``, whose ``started()`` fires
once every actor has recovered its outbox from LMDB.

* Idle: ``--numbers`` actors with a valid stored token each, so they reach
  their idle state (no task; a shared timer entry for the token refresh)
  without any network. RSS per actor is
  the process RSS growth divided by the number of actors.
* Recovery: a fresh data dir holding ``--pending`` accepted, unsent messages
  (message record, listing index and outbox entry each, spread over
  ``--recovery-numbers`` numbers), then the time from opening the store to
  every actor having its outbox queued in memory. The queued count is checked.

Usage::

    .venv/bin/python -m bench.actors --numbers 10000 [--pending 1000000] [--json]

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing

from actors.http.pool import H11Pool
from actors.number import NumberActor
from actors.supervisor import Supervisor
from bench._harness import rss_mb
from dispatcher.config import NumberConfig, Secret
from dispatcher.core import ledger, logs, outbox
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.models import MessageRecord, OutboxEntry, StoredToken, record_encoder
from dispatcher.core.store import Store, number_key, seq_key
from dispatcher.service.numbers import build_actor

ACCOUNT = "AC00000000000000000000000000000001"
# Nothing listens here: idle actors never connect, recovering ones must not send.
DEAD_ENDPOINT = "http://127.0.0.1:9"
FILL_TXN = 20_000  # records per fill transaction


def number(i: int) -> str:
    return f"+1555{i:07d}"


def number_config(num: str) -> NumberConfig:
    return NumberConfig(
        number=num, account=ACCOUNT, endpoints=[DEAD_ENDPOINT], password=Secret(value="bench-Passw0rd!")
    )


def build(numbers: list[str], store: Store) -> list[NumberActor]:
    wall = SystemWallClock()
    return [
        build_actor(number_config(num), H11Pool(DEAD_ENDPOINT, max_connections=32), store=store, wall=wall)
        for num in numbers
    ]


def store_tokens(store: Store, numbers: list[str]) -> None:
    """A valid token per number, as a previous run would have left it (so no login happens)."""
    token = record_encoder.encode(
        StoredToken(token="bench", expires_at=time.time() + 7 * 86_400, endpoint="")
    )
    with store.env.begin(write=True, db=store.env.open_db(b"tokens")) as txn:
        for num in numbers:
            txn.put(number_key(num), token)


async def _run_idle(data_dir: Path, count: int) -> dict[str, Any]:
    numbers = [number(i) for i in range(count)]
    store = Store(data_dir, map_size=1 << 30)
    store_tokens(store, numbers)
    gc.collect()
    rss0 = own_rss_mb()
    t0 = time.perf_counter()
    actors = build(numbers, store)
    supervisor = Supervisor(actors)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        await nursery.start(supervisor.run)
        # Stored tokens leave every actor idle: no task, a timer entry for its token refresh.
        await trio.testing.wait_all_tasks_blocked()
        spawn_s = time.perf_counter() - t0
        gc.collect()
        rss1 = own_rss_mb()
        running = sum(1 for state in supervisor.states().values() if state == "running")
        idle = sum(1 for a in actors if a.statistics().pending == 0)
        tasks = task_count()
        supervisor.stop()
        nursery.cancel_scope.cancel()
    store.close_env()
    if running != count or idle != count:
        raise RuntimeError(f"{running} of {count} actors running, {idle} idle")
    return {
        "numbers": count,
        "spawn_s": round(spawn_s, 3),
        "spawn_us_per_actor": round(spawn_s / count * 1e6, 1),
        "rss_before_mb": round(rss0, 1),
        "rss_after_mb": round(rss1, 1),
        "rss_kb_per_idle_actor": round((rss1 - rss0) * 1024 / count, 2),
        "tasks_when_idle": tasks,  # every task of the run: the store writer's, the supervisor's...
    }


def task_count() -> int:
    """Tasks alive in this trio run (idle actors should add none)."""
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        todo.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


def fill(data_dir: Path, numbers: list[str], pending: int) -> float:
    """Write ``pending`` accepted messages, round-robin over ``numbers``; returns seconds taken."""
    store = Store(data_dir, map_size=max(1 << 30, pending * 1200))
    env = store.env
    dbs = {name: env.open_db(name) for name in (b"messages", b"by_account", b"outbox", b"outbox_to", b"meta")}
    now = time.time()
    t0 = time.perf_counter()
    written = 0
    while written < pending:
        with env.begin(write=True) as txn:
            for i in range(written, min(pending, written + FILL_TXN)):
                sender = numbers[i % len(numbers)]
                record = MessageRecord(
                    sid=f"SM{i:032x}",
                    account_sid=ACCOUNT,
                    from_number=sender,
                    to_number=f"+1666{i % 100_000:07d}",
                    body=f"Your code is {i % 1_000_000:06d}. It expires in 10 minutes.",
                    date_created=now,
                    date_updated=now,
                )
                txn.put(ledger.sid_key(record.sid), record_encoder.encode(record), db=dbs[b"messages"])
                txn.put(ledger.account_key(record), b"", db=dbs[b"by_account"])
                entry = record_encoder.encode(OutboxEntry(record.sid, record.to_number))
                seq = i // len(numbers) + 1
                txn.put(seq_key(sender, seq), entry, db=dbs[b"outbox"])
                txn.put(outbox.recipient_key(sender, record.to_number, seq), entry, db=dbs[b"outbox_to"])
            written = min(pending, written + FILL_TXN)
        with env.begin(write=True) as txn:  # the durable depth kept with the outbox
            for sender in numbers:
                count = pending // len(numbers) + (numbers.index(sender) < pending % len(numbers))
                txn.put(outbox.depth_key(sender), count.to_bytes(8, "big"), db=dbs[b"meta"])
    store.close_env()
    return time.perf_counter() - t0


async def _run_recovery(data_dir: Path, numbers: list[str], pending: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    store = Store(data_dir, map_size=max(1 << 30, pending * 1200))
    actors = build(numbers, store)
    supervisor = Supervisor(actors)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        await nursery.start(supervisor.run)
        recovery_s = time.perf_counter() - t0
        queued = sum(a.statistics().pending for a in actors)
        supervisor.stop()
        nursery.cancel_scope.cancel()
    store.close_env()
    if queued != pending:
        raise RuntimeError(f"recovered {queued} of {pending} pending messages")
    return {
        "pending": pending,
        "recovery_numbers": len(numbers),
        "recovery_s": round(recovery_s, 3),
        "recovered_per_s": round(pending / recovery_s),
        "rss_after_recovery_mb": round(own_rss_mb(), 1),
    }


def own_rss_mb() -> float:
    return rss_mb(os.getpid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=10_000, help="idle actors to spawn")
    parser.add_argument("--pending", type=int, default=1_000_000, help="pending messages to recover")
    parser.add_argument(
        "--recovery-numbers", type=int, default=10, help="numbers the pending are spread over"
    )
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args(argv)
    if args.numbers < 1 or args.pending < 1 or args.recovery_numbers < 1:
        parser.error("--numbers, --pending and --recovery-numbers must be >= 1")
    logs.configure("error")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-actors-") as tmp:
        result.update(trio.run(_run_idle, Path(tmp) / "idle", args.numbers))
        _say(f"{args.numbers} idle actors: spawned in {result['spawn_s']} s, "
             f"{result['rss_kb_per_idle_actor']} KB RSS each, "
             f"{result['tasks_when_idle']} tasks in all")  # fmt: skip
        numbers = [number(i) for i in range(args.recovery_numbers)]
        fill_s = fill(Path(tmp) / "recovery", numbers, args.pending)
        _say(f"filled {args.pending} pending messages in {fill_s:.1f} s")
        result.update(trio.run(_run_recovery, Path(tmp) / "recovery", numbers, args.pending))
        result["fill_s"] = round(fill_s, 1)
        _say(f"recovered {args.pending} pending messages over {args.recovery_numbers} numbers "
             f"in {result['recovery_s']} s")  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
