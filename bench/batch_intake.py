"""Intake throughput: ``POST /v1/messages:batch`` against one create per request.

Runs a daemon in this process (front door on 127.0.0.1, embedded simulator,
three sandbox numbers whose rate limit keeps the actors idle, so only intake is
measured: HTTP, decoding, validation, the durable LMDB commit). Posts
``--batches`` batches of ``--size`` messages one after another, then
``--singles`` Twilio-form creates over ``--concurrency`` keep-alive
connections, and reports accepted messages per second and LMDB commits for
each. Every message is checked to be in the store afterwards.

Usage::

    .venv/bin/python -m bench.batch_intake [--batches 20] [--size 500] [--singles 2000] [--concurrency 32]

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import trio

from actors.http.pool import H11Pool
from bench._harness import embedded_config, post_creates
from dispatcher import config as configuration
from dispatcher.core import logs
from dispatcher.service.daemon import Running, run_daemon

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "bench-auth-token"
NUMBERS = ("+15550000001", "+15550000002", "+15550000003")


def make_config(data_dir: Path) -> configuration.Config:
    # Rate 0.001: the actors send nothing while intake is measured.
    text = embedded_config(
        data_dir, NUMBERS, account=ACCOUNT, auth_token=TOKEN, number_extra="rate = 0.001\nburst = 1"
    )
    return configuration.loads(text)


def _headers(content_type: bytes) -> list[tuple[bytes, bytes]]:
    auth = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
    return [(b"authorization", b"Basic " + auth), (b"content-type", content_type)]


async def post_batches(url: str, batches: int, size: int) -> float:
    pool = H11Pool(url, max_connections=1)
    headers = _headers(b"application/json")
    bodies = [
        json.dumps(
            [
                {
                    "to": f"whatsapp:+1555{b:03d}{i:04d}",
                    "from": f"whatsapp:{NUMBERS[i % 3]}",
                    "body": f"b{b}-{i}",
                }
                for i in range(size)
            ]
        ).encode()
        for b in range(batches)
    ]
    try:
        start = time.perf_counter()
        for body in bodies:
            resp = await pool.request(b"POST", b"/v1/messages:batch", headers, body)
            result = json.loads(resp.body)
            if resp.status != 200 or result["accepted"] != size:
                raise SystemExit(f"batch refused: {resp.status} {resp.body[:300]!r}")
        return time.perf_counter() - start
    finally:
        await pool.aclose()


async def post_singles(url: str, count: int, concurrency: int) -> float:
    bodies = [
        urllib.parse.urlencode(
            {"To": f"whatsapp:+1556{i:07d}", "From": f"whatsapp:{NUMBERS[i % 3]}", "Body": f"s{i}"}
        ).encode()
        for i in range(count)
    ]
    return await post_creates(url, _headers(b"application/x-www-form-urlencoded"), bodies, concurrency)


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(
                lambda task_status: run_daemon(
                    make_config(Path(tmp) / "data"), handle_signals=False, task_status=task_status
                )
            )
            try:
                commits0 = running.store.statistics().commits
                batch_s = await post_batches(running.url, args.batches, args.size)
                commits1 = running.store.statistics().commits
                single_s = await post_singles(running.url, args.singles, args.concurrency)
                commits2 = running.store.statistics().commits
                stored = running.store.count(b"by_account", ACCOUNT.encode() + b"\x00")
            finally:
                running.shutdown.set()
    total_batch = args.batches * args.size
    if stored != total_batch + args.singles:
        raise SystemExit(f"stored {stored} messages, expected {total_batch + args.singles}")
    return {
        "bench": "batch_intake",
        "batch_size": args.size,
        "batch_messages": total_batch,
        "batch_msgs_per_s": round(total_batch / batch_s),
        "batch_commits": commits1 - commits0,
        "single_messages": args.singles,
        "single_concurrency": args.concurrency,
        "single_msgs_per_s": round(args.singles / single_s),
        "single_commits": commits2 - commits1,
        "stored": stored,
    }


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    for name in ("batches", "size", "singles", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.size > 1000:
        parser.error("--size must be at most 1000 (the batch limit)")
    logs.configure("warning")
    result = trio.run(main, args)
    print(
        f"batch: {result['batch_msgs_per_s']} msg/s in {result['batch_commits']} commits; "
        f"single: {result['single_msgs_per_s']} msg/s in {result['single_commits']} commits",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    cli()
