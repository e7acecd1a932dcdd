"""Crash test: kill -9 the daemon under sustained load, restart it, drain; nothing accepted may be lost.

The simulator runs as its own process (it must outlive the daemon: it is the
record of what WhatsApp received). The daemon runs as ``wadispatch run`` with
real endpoints on it. A load generator posts creates through the front door
(each body unique) and remembers which got a 201. At random moments the daemon
is killed with SIGKILL (no drain, no flush) and started again on the same data
dir; after the last kill it is left to drain. Then:

- ``lost``: 201-acknowledged messages the simulator never received (must be 0);
- ``duplicated``: extra copies received. At-least-once delivery allows them only
  for sends in flight at a kill (sent, but the kill came before the ``sent``
  mark was committed: an ambiguous send). ``duplicates_explained`` counts the
  duplicates whose first copy arrived within the in-flight window just before
  a kill (the last ``max_in_flight`` sends of that number);
- ``unacknowledged_delivered``: sends whose 201 the kill cut off but which were
  committed (a client would retry them; idempotency keys make that safe).

``--on-ambiguous fail`` runs every number at-most-once: a send in flight at a kill
is failed as ambiguous (30008) by the restarted daemon instead of sent again. The
run then drains until every outbox is empty, reads the records from the data dir
once the daemon has stopped, and counts ``failed_ambiguous`` (acknowledged messages
failed so; ``failed_ambiguous_delivered``: those the simulator did get, their answer
lost at the kill). ``lost`` is then what was acknowledged and neither delivered nor
failed as ambiguous, and ``duplicated`` must be 0.

Usage::

    .venv/bin/python -m bench.crash [--kills 5] [--numbers 3] [--seed N] [--on-ambiguous fail]

Prints a summary on stderr and one JSON line on stdout; exits 1 if anything was lost (or,
under ``fail``, sent twice).
Only the processes it started are signalled, by their PIDs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from actors.policy import AMBIGUOUS_FAILED
from actors.transport import TransportError
from bench._harness import (
    create_path,
    free_port,
    front_headers,
    number_digits,
    register_numbers,
    start_daemon,
    start_simulator,
    stop_process,
    wait_ready,
    write_config,
)
from dispatcher.core import ledger
from dispatcher.core.store import Store

MAX_IN_FLIGHT = 64  # what bench._harness.write_config gives every number


class Load:
    """Posts unique creates until stopped; remembers the bodies that got a 201."""

    def __init__(self, url: str, numbers: int, concurrency: int) -> None:
        self.url = url
        self.numbers = numbers
        self.concurrency = concurrency
        self.next = 0
        self.acknowledged: set[str] = set()
        self.cut_off = 0  # requests that got no answer (the daemon died under them)
        self.refused = 0  # non-201 answers

    def body(self, index: int) -> tuple[str, bytes]:
        text = f"crash {index}"
        form = {
            "From": f"whatsapp:+{number_digits(index % self.numbers)}",
            "To": f"whatsapp:+1555123{index % 997:04d}",
            "Body": text,
        }
        return text, urllib.parse.urlencode(form).encode()

    async def run(self, stop: trio.Event) -> None:
        pool = H11Pool(self.url, max_connections=self.concurrency, request_timeout=10.0)
        headers, path = front_headers(), create_path()

        async def worker() -> None:
            while not stop.is_set():
                index = self.next
                self.next += 1
                text, body = self.body(index)
                try:
                    resp = await pool.request(b"POST", path, headers, body)
                except TransportError:
                    self.cut_off += 1
                    await trio.sleep(0.05)  # the daemon is down: do not spin
                    continue
                if resp.status == 201:
                    self.acknowledged.add(text)
                else:
                    self.refused += 1

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.concurrency):
                    nursery.start_soon(worker)
        finally:
            await pool.aclose()


async def received(sim: H11Pool, numbers: int) -> dict[str, list[str]]:
    """Every number's received bodies, in arrival order."""
    out = {}
    for i in range(numbers):
        query = urllib.parse.urlencode({"number": f"+{number_digits(i)}"})
        resp = await sim.request(b"GET", f"/_sim/received?{query}".encode(), [], b"")
        out[number_digits(i)] = [str(m["content"]) for m in json.loads(resp.body)["messages"]]
    return out


async def accepted_counts(sim: H11Pool) -> dict[str, int]:
    resp = await sim.request(b"GET", b"/_sim/counters", [], b"")
    return {n.lstrip("+"): c["accepted"] for n, c in json.loads(resp.body)["numbers"].items()}


async def crash_run(
    *,
    kills: int,
    numbers: int,
    rate: float,
    concurrency: int,
    up_min: float,
    up_max: float,
    drain_timeout: float,
    seed: int | None,
    workdir: Path,
    on_ambiguous: str = "retry",
) -> dict[str, Any]:
    rng = random.Random(seed)
    port, sim_port = free_port(), free_port()
    url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
    data = workdir / "data"
    cfg = write_config(
        data, port, sim_port, numbers, rate, 50, burst=int(rate), embedded=False, on_ambiguous=on_ambiguous
    )
    sim_proc = start_simulator(sim_port, "--webhook-batch", "50")
    daemon: subprocess.Popen[bytes] | None = None
    sim = H11Pool(sim_url, max_connections=1)
    load = Load(url, numbers, concurrency)
    kill_marks: list[dict[str, int]] = []  # per kill: simulator accepted count per number
    restarts = 0
    t0 = time.monotonic()
    try:
        await register_numbers(sim_url, port, numbers, rate, int(rate))
        stop_load = trio.Event()
        async with trio.open_nursery() as nursery:
            daemon = start_daemon(cfg)
            await wait_ready(url)
            nursery.start_soon(load.run, stop_load)
            for _ in range(kills):
                await trio.sleep(rng.uniform(up_min, up_max))
                os.kill(daemon.pid, signal.SIGKILL)
                await trio.to_thread.run_sync(daemon.wait)
                await trio.sleep(0.2)  # let the simulator finish requests it already read
                kill_marks.append(await accepted_counts(sim))
                daemon = start_daemon(cfg)
                restarts += 1
                await wait_ready(url)
            await trio.sleep(rng.uniform(up_min, up_max))
            stop_load.set()
        # Drain: everything acknowledged must reach the simulator (under fail: every outbox empties,
        # what was in flight at a kill having failed as ambiguous instead).
        got: dict[str, list[str]] = {}
        with trio.move_on_after(drain_timeout):
            if on_ambiguous == "fail":
                await drained(url)
            while on_ambiguous != "fail":
                got = await received(sim, numbers)
                if load.acknowledged <= {b for bodies in got.values() for b in bodies}:
                    break
                await trio.sleep(0.2)
        got = await received(sim, numbers)
    finally:
        await sim.aclose()
        if daemon is not None and daemon.poll() is None:
            await trio.to_thread.run_sync(stop_process, daemon)
        await trio.to_thread.run_sync(stop_process, sim_proc)
    counts = Counter(b for bodies in got.values() for b in bodies)
    duplicates = {b: n - 1 for b, n in counts.items() if n > 1}
    explained = sum(dup for body, dup in duplicates.items() if _in_flight_at_a_kill(body, got, kill_marks))
    ambiguous = failed_ambiguous(data, load.acknowledged) if on_ambiguous == "fail" else set()
    return {
        "on_ambiguous": on_ambiguous,
        "kills": kills,
        "restarts": restarts,
        "numbers": numbers,
        "seconds": round(time.monotonic() - t0, 1),
        "attempted": load.next,
        "accepted": len(load.acknowledged),
        "delivered": len(counts),
        "lost": len(load.acknowledged - set(counts) - ambiguous),
        "duplicated": sum(duplicates.values()),
        "duplicates_explained": explained,
        "unacknowledged_delivered": len(set(counts) - load.acknowledged),
        "failed_ambiguous": len(ambiguous),
        "failed_ambiguous_delivered": len(ambiguous & set(counts)),
        "cut_off_requests": load.cut_off,
        "refused_requests": load.refused,
    }


async def drained(url: str) -> None:
    """Until the daemon's outboxes are empty and nothing is in flight (its /metrics)."""
    pool = H11Pool(url, max_connections=1)
    try:
        while True:
            resp = await pool.request(b"GET", b"/metrics", [], b"")
            if resp.status != 200:
                raise RuntimeError(f"/metrics answered {resp.status}")
            samples = [
                float(line.rsplit(" ", 1)[1])
                for line in resp.body.decode().splitlines()
                if line.startswith(("wadispatch_outbox_depth{", "wadispatch_in_flight{"))
            ]
            if samples and not any(samples):
                return
            await trio.sleep(0.2)
    finally:
        await pool.aclose()


def failed_ambiguous(data: Path, acknowledged: set[str]) -> set[str]:
    """The bodies of acknowledged messages recorded failed as ambiguous (read once the daemon stopped)."""
    store = Store(data)
    try:
        found = set()
        for _, raw in store.scan(b"messages", b""):
            record = ledger.load(raw)
            if record.body in acknowledged and (record.error_code, record.error_message) == AMBIGUOUS_FAILED:
                found.add(record.body)
        return found
    finally:
        store.close_env()


def _in_flight_at_a_kill(body: str, got: dict[str, list[str]], kill_marks: list[dict[str, int]]) -> bool:
    """The first copy arrived within the last MAX_IN_FLIGHT sends of its number before some kill,
    and a later copy after it: the send was in flight when the daemon died."""
    for digits, bodies in got.items():
        if body not in bodies:
            continue
        first = bodies.index(body)
        later = [i for i, b in enumerate(bodies) if b == body and i > first]
        for mark in kill_marks:
            at_kill = mark.get(digits, 0)
            if at_kill - MAX_IN_FLIGHT <= first < at_kill and later and later[0] >= at_kill:
                return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--numbers", type=int, default=3)
    parser.add_argument(
        "--rate", type=float, default=200.0, help="per-number send rate (and simulator limit)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--up-min", type=float, default=0.5, help="least seconds of load before a kill")
    parser.add_argument("--up-max", type=float, default=2.5)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--on-ambiguous",
        choices=("retry", "fail"),
        default="retry",
        help="the numbers' policy: fail never sends a message twice (it fails what a kill cut off)",
    )
    args = parser.parse_args()
    if args.kills < 1 or args.numbers < 1 or args.concurrency < 1 or not 0 < args.up_min <= args.up_max:
        parser.error("--kills, --numbers, --concurrency >= 1 and 0 < --up-min <= --up-max")
    with tempfile.TemporaryDirectory(prefix="wadispatch-crash-") as tmp:
        result = trio.run(
            lambda: crash_run(
                kills=args.kills,
                numbers=args.numbers,
                rate=args.rate,
                concurrency=args.concurrency,
                up_min=args.up_min,
                up_max=args.up_max,
                drain_timeout=args.drain_timeout,
                seed=args.seed,
                workdir=Path(tmp),
                on_ambiguous=args.on_ambiguous,
            )
        )
    for key, value in result.items():
        sys.stderr.write(f"{key:>26}: {value}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    bad = result["lost"] or (args.on_ambiguous == "fail" and result["duplicated"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
