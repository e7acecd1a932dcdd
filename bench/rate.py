"""Rate accuracy: numbers kept saturated for a while, sends counted where they land (the simulator).

The daemon runs as ``wadispatch run`` in a subprocess with its embedded
simulator enforcing the same limit as the numbers' configuration (On-Prem
defaults: 20 msg/s, bursts of 60). This process queues more messages than the
numbers can send in ``--duration`` (so their outboxes never run dry), then
samples the simulator's per-number ``accepted`` counter every ``--sample``
seconds until the duration has passed.

Per number it reports:
    * ``achieved_over_configured``: sustained rate after the initial burst (the
      least-squares slope of the samples from 1 s after ``burst`` sends) / ``rate``;
    * ``max_burst``: the largest excess of sends over the sustained allowance
      in any window between two samples, ``max(c_j - c_i - rate * (t_j - t_i))``
      (the bucket starts full, so this is about the burst the number used);
    * ``rejected_429``: the simulator's 429 answers (the target is zero).

Usage::

    .venv/bin/python -m bench.rate [--numbers 1] [--rate 20] [--burst 60] [--duration 30] [--json]
    .venv/bin/python -m bench.rate --channel cloud [--rate 80] [--burst 80] [--json]

With ``--channel cloud`` the numbers are Cloud API numbers (Meta's default
throughput, 80 msg/s with bursts of 80, the messaging tier unlimited, one
recipient per message so the pair rate never binds), and ``rejected_429``
counts Meta's limit refusals (130429, 131056, 131048: HTTP 400 on Graph).

``--chatty`` (Cloud only) runs conversations instead of saturation: one number,
``--recipients`` people each getting bursts of messages, against Meta's pair
rate (bursts borrow from future quota); it reports the 131056 count (the target
is zero) and the delivery latency next to the minimum Meta's rule allows
(``bench.chatty``)::

    .venv/bin/python -m bench.rate --channel cloud --chatty [--recipients 3] [--duration 120] [--seed 1]

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from bench import chatty, cloud
from bench._harness import (
    create_bodies,
    create_path,
    free_port,
    front_headers,
    number_digits,
    start_daemon,
    stop_process,
    wait_ready,
    write_config,
)

Samples = list[tuple[float, int]]


async def _sim_counters(sim: H11Pool, channel: str, count: int) -> dict[str, dict[str, int]]:
    """Per number: ``accepted`` and ``rejected_429`` (on Cloud, Meta's three limit refusals)."""
    if channel == "cloud":
        figures = await cloud.counters(sim, count)
        return {
            f"+{number_digits(i)}": {
                "accepted": figures[cloud.pnid(i)]["accepted"],
                "rejected_429": cloud.refused(figures[cloud.pnid(i)]),
            }
            for i in range(count)
        }
    resp = await sim.request(b"GET", b"/_sim/counters", [], b"")
    numbers: dict[str, dict[str, int]] = json.loads(resp.body)["numbers"]
    return numbers


async def drive(args: argparse.Namespace, url: str, sim_url: str) -> dict[str, Any]:
    per_number = math.ceil(args.rate * args.duration + args.burst * 1.5 + 10)
    total = per_number * args.numbers
    bodies = create_bodies(args.numbers, total, args.channel)
    front = H11Pool(url, max_connections=8, request_timeout=30.0)
    sim = H11Pool(sim_url, max_connections=1)
    samples: dict[str, Samples] = {}
    path, headers = create_path(), front_headers()
    errors = 0

    async def post(lo: int, hi: int) -> None:
        nonlocal errors
        for body in bodies[lo:hi]:
            resp = await front.request(b"POST", path, headers, body)
            if resp.status != 201:
                errors += 1

    t0 = time.perf_counter()
    end = t0 + args.duration
    async with trio.open_nursery() as nursery:
        step = math.ceil(total / 8)
        for lo in range(0, total, step):
            nursery.start_soon(post, lo, min(total, lo + step))
        while (asked := time.perf_counter()) < end:
            counters = await _sim_counters(sim, args.channel, args.numbers)
            # The counters were read somewhere between asking and hearing back: take the midpoint.
            at = (asked + time.perf_counter()) / 2 - t0
            for number, figures in counters.items():
                samples.setdefault(number, []).append((at, figures["accepted"]))
            await trio.sleep(args.sample)
    counters = await _sim_counters(sim, args.channel, args.numbers)
    await front.aclose()
    await sim.aclose()
    if errors:
        raise RuntimeError(f"{errors} creates were refused")
    result: dict[str, Any] = {"numbers": {}}
    for number, series in sorted(samples.items()):
        figures = analyse(series, args.rate, args.burst)
        figures["rejected_429"] = counters[number]["rejected_429"]
        figures["saturated"] = series[-1][1] < per_number  # the outbox never ran dry
        result["numbers"][number] = figures
    every = result["numbers"].values()
    result.update(
        channel=args.channel,
        rate=args.rate,
        burst=args.burst,
        duration_s=args.duration,
        min_achieved_over_configured=min(f["achieved_over_configured"] for f in every),
        max_achieved_over_configured=max(f["achieved_over_configured"] for f in every),
        max_burst=max(f["max_burst"] for f in every),
        rejected_429=sum(f["rejected_429"] for f in every),
        all_saturated=all(f["saturated"] for f in every),
    )
    return result


def analyse(series: Samples, rate: float, burst: int, settle: float = 1.0) -> dict[str, Any]:
    """Sustained rate after the initial burst, and the largest burst, from (time, count) samples.

    The sustained rate is the least-squares slope of count over time, from ``settle``
    seconds after the count first reached ``burst`` (while the creates still pour in,
    the first sends trail their allowance and then catch up) to the end.
    """
    reached = next((t for t, count in series if count >= burst), None)
    if reached is None:
        raise RuntimeError(f"the number never got past its burst of {burst}: {series[-1]}")
    window = [(t, c) for t, c in series if t >= reached + settle]
    if len(window) < 2:
        window = [(t, c) for t, c in series if t >= reached]
    if len(window) < 2:
        raise RuntimeError("too few samples after the burst: lengthen --duration")
    mean_t = sum(t for t, _ in window) / len(window)
    mean_c = sum(c for _, c in window) / len(window)
    spread = sum((t - mean_t) ** 2 for t, _ in window)
    sustained = sum((t - mean_t) * (c - mean_c) for t, c in window) / spread
    max_burst = 0.0
    low = math.inf  # min over i <= j of (c_i - rate * t_i)
    for t, count in [(0.0, 0), *series]:
        low = min(low, count - rate * t)
        max_burst = max(max_burst, count - rate * t - low)
    return {
        "sent": series[-1][1],
        "sustained_per_s": round(sustained, 3),
        "achieved_over_configured": round(sustained / rate, 4),
        "max_burst": round(max_burst, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1)
    parser.add_argument(
        "--channel", choices=("onprem", "cloud"), default="onprem", help="On-Prem, or Cloud API numbers"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="configured msgs/s per number (On-Prem: 20, Cloud: 80)"
    )
    parser.add_argument(
        "--burst", type=int, default=None, help="configured burst per number (On-Prem: 60, Cloud: 80)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds of saturation (30), or of conversation (120)"
    )
    parser.add_argument(
        "--chatty", action="store_true", help="Cloud: bursts to a few recipients under Meta's pair rate"
    )
    parser.add_argument("--recipients", type=int, default=3, help="--chatty: people in conversation")
    parser.add_argument("--seed", type=int, default=1, help="--chatty: the conversations' random seed")
    parser.add_argument("--sample", type=float, default=0.05, help="seconds between counter samples")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args(argv)
    if args.rate is None:
        args.rate = 80.0 if args.channel == "cloud" else 20.0
    if args.burst is None:
        args.burst = 80 if args.channel == "cloud" else 60
    if args.duration is None:
        args.duration = 120.0 if args.chatty else 30.0
    if args.numbers < 1 or args.rate <= 0 or args.burst < 1 or args.duration <= 0 or args.sample <= 0:
        parser.error("--numbers and --burst must be >= 1; --rate, --duration and --sample > 0")
    if args.chatty and (args.channel != "cloud" or args.numbers != 1 or args.recipients < 1):
        parser.error("--chatty needs --channel cloud, one number and --recipients >= 1")
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-rate-") as tmp:
        port, sim_port = free_port(), free_port()
        cfg = write_config(
            Path(tmp) / "data",
            port,
            sim_port,
            args.numbers,
            args.rate,
            webhook_batch=50,
            burst=args.burst,
            channel=args.channel,
        )
        proc = start_daemon(cfg)
        try:
            url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
            trio.run(wait_ready, url)
            result = trio.run(chatty.drive if args.chatty else drive, args, url, sim_url)
        finally:
            stop_process(proc)
    if args.chatty:
        print({k: v for k, v in result.items() if k != "channel"}, file=sys.stderr)
    for number, figures in result.get("numbers", {}).items():
        print(f"{number}: {figures}", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
