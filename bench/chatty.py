"""``bench.rate --channel cloud --chatty``: conversations against Meta's pair rate.

A Cloud number talks to a few recipients (``--recipients``), each in bursts of 1-6
messages (a bot's several bubbles) 5-40 s apart, for ``--duration`` seconds: about
Meta's sustained pair rate (one per 6 s per recipient), so bursts often come while
an earlier one's borrowed quota is still owed (reference 2.5: after n messages in a
burst the next waits about n x 6 s). The embedded simulator enforces that rule.

Per message it measures the delivery latency (create answered -> the message's
status leaves ``queued``, polled through the front door) and Meta's minimum for the
same traffic: the earliest time the rule admits it, given the creates so far and
one message at a time per recipient (``PairLimiter`` with no margin, which admits
exactly what the simulator's ``PairGate`` admits). ``excess`` = latency - minimum
is the daemon's own delay. Reports ``pair_limited_131056`` (the target is 0).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.parse
from typing import Any

import attrs
import trio

from actors.http.pool import H11Pool
from actors.pacing.pairrate import PairLimiter
from bench import cloud
from bench._harness import create_path, front_headers, number_digits

_POLL = 0.05  # seconds between status polls of the messages that may have left
_SENT = frozenset({"sent", "delivered", "read"})
_FAILED = frozenset({"failed", "undelivered", "canceled"})


@attrs.define
class _Message:
    sid: str
    created: float  # seconds since the start, when the 201 came back
    minimum: float  # Meta's earliest send time for it
    left: float | None = None  # when its status was first seen past queued
    failed: bool = False


def recipient(k: int) -> str:
    return f"+1650777{k:04d}"


async def drive(args: argparse.Namespace, url: str, sim_url: str) -> dict[str, Any]:
    front = H11Pool(url, max_connections=8, request_timeout=30.0)
    sim = H11Pool(sim_url, max_connections=1)
    path, headers = create_path(), front_headers()
    fetch_headers = [h for h in headers if h[0] != b"content-type"]
    meta = PairLimiter(6.0, 45, margin=0.0)  # the number's pair settings are Meta's defaults
    last_minimum: dict[str, float] = {}
    messages: list[_Message] = []
    t0 = time.perf_counter()
    talking = args.recipients

    def now() -> float:
        return time.perf_counter() - t0

    async def converse(k: int) -> None:
        nonlocal talking
        rng = random.Random(f"{args.seed}-{k}")
        person = recipient(k)
        await trio.sleep(rng.uniform(0.0, 5.0))
        n = 0
        while now() < args.duration:
            for _ in range(rng.randint(1, 6)):
                body = urllib.parse.urlencode(
                    {"From": f"whatsapp:+{number_digits(0)}", "To": f"whatsapp:{person}", "Body": f"{k}.{n}"}
                ).encode()
                n += 1
                resp = await front.request(b"POST", path, headers, body)
                if resp.status != 201:
                    raise RuntimeError(f"create refused: {resp.status} {resp.body[:200]!r}")
                created = now()
                # One at a time per recipient, in order: Meta's earliest time for this one.
                at = meta.ready_at(person, max(created, last_minimum.get(person, 0.0)))
                meta.take(person, at)
                last_minimum[person] = at
                messages.append(_Message(json.loads(resp.body)["sid"], created, at))
            gap = rng.uniform(5.0, 40.0)
            if now() + gap >= args.duration:
                break
            await trio.sleep(gap)
        talking -= 1

    async def poll(deadline: float) -> None:
        prefix = create_path().removesuffix(b".json")
        while talking or any(m.left is None for m in messages):
            if now() > deadline:
                raise RuntimeError("messages still queued at the deadline")
            due = [m for m in messages if m.left is None and m.minimum <= now()]
            for m in due:
                asked = now()
                resp = await front.request(b"GET", prefix + f"/{m.sid}.json".encode(), fetch_headers, b"")
                status = json.loads(resp.body)["status"]
                if status in _SENT or status in _FAILED:
                    m.left, m.failed = (asked + now()) / 2, status in _FAILED
            await trio.sleep(_POLL)

    async with trio.open_nursery() as nursery:
        for k in range(args.recipients):
            nursery.start_soon(converse, k)
        # The longest debt is 45 x 6 s; anything still queued well after that is a failure.
        nursery.start_soon(poll, args.duration + 40.0 + 45 * 6.0 + 60.0)
    figures = (await cloud.counters(sim, 1))[cloud.pnid(0)]
    await front.aclose()
    await sim.aclose()
    latency = [m.left - m.created for m in messages if m.left is not None]
    minimum = [m.minimum - m.created for m in messages]
    excess = [m.left - m.minimum for m in messages if m.left is not None]
    return {
        "channel": "cloud",
        "chatty": True,
        "recipients": args.recipients,
        "duration_s": args.duration,
        "seed": args.seed,
        "messages": len(messages),
        "failed": sum(m.failed for m in messages),
        "pair_limited_131056": figures["pair_limited"],
        "rejected_429": cloud.refused(figures),
        "latency_s": spread(latency),
        "meta_minimum_s": spread(minimum),
        "excess_s": spread(excess),
        "held_by_meta": sum(1 for d in minimum if d > 0.5),  # messages Meta's rule makes wait
    }


def spread(values: list[float]) -> dict[str, float]:
    """p50 / p95 / max, in seconds, of ``values`` (nearest rank)."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 3)

    return {"p50": rank(0.5), "p95": rank(0.95), "max": round(ordered[-1], 3)}
