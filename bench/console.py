"""The operator console on a large fleet: the sampler's tick and the pages' render times.

Starts the daemon in this process with ``--numbers`` simulated numbers (the embedded
simulator) and the admin token, gives ``--active`` of them a message each so they have
sample rings, then measures for ``--seconds``: the sampler's tick (it runs once a second
on the trio loop, so its duration is how long it holds the loop), and, after logging in
through the form, each console page and its live JSON over HTTP (``--renders`` each), with
a ``/metrics`` scrape of the same fleet for comparison.

Usage::

    .venv/bin/python -m bench.console --numbers 1000 --active 200 [--seconds 20] [--renders 10] [--json]

Prints a summary on stderr and one JSON line on stdout (milliseconds, medians and maxima).
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

import httpx
import trio

from bench._harness import embedded_config
from dispatcher import config as configuration
from dispatcher.core import logs
from dispatcher.service.daemon import Running, run_daemon

ACCOUNT = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"


def fleet(count: int) -> list[str]:
    return [f"+1555{i:07d}" for i in range(1, count + 1)]


def config_text(data_dir: Path, numbers: list[str]) -> str:
    admin = f'[admin]\ntoken = {{ value = "{ADMIN_TOKEN}" }}\n'
    return embedded_config(
        data_dir, numbers, account=ACCOUNT, auth_token=AUTH_TOKEN, extra=admin, map_size_mb=256
    )


def _ms(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 2), "max": round(max(samples), 2)}


async def _timed(client: httpx.AsyncClient, url: str, renders: int) -> list[float]:
    out = []
    for _ in range(renders):
        began = time.perf_counter()
        resp = await client.get(url)
        out.append((time.perf_counter() - began) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:200]}")
    return out


async def measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    numbers = fleet(args.numbers)
    cfg = configuration.loads(config_text(data_dir, numbers))
    async with trio.open_nursery() as nursery:
        daemon: Running = await nursery.start(
            lambda task_status: run_daemon(cfg, handle_signals=False, task_status=task_status)
        )
        assert daemon.sampler is not None
        try:
            async with httpx.AsyncClient(base_url=daemon.url, timeout=30.0) as client:
                create = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
                for number in numbers[: args.active]:
                    data = {"From": number, "To": "+447700900123", "Body": "bench"}
                    resp = await client.post(create, data=data, auth=(ACCOUNT, AUTH_TOKEN))
                    resp.raise_for_status()
                ticks = []
                for _ in range(args.seconds):
                    await trio.sleep(1.0)
                    ticks.append(daemon.sampler.last_duration * 1000)
                login = await client.post("/console/login", data={"token": ADMIN_TOKEN})
                if login.status_code != 303:
                    raise RuntimeError(f"login: {login.status_code}")
                pages = {
                    "fleet": "/console/fleet",
                    "fleet_sorted_by_429s": "/console/fleet?sort=limited&order=desc",
                    "fleet_json": "/console/api/fleet",
                    "number": f"/console/numbers/{numbers[0]}",
                    "number_json": f"/console/api/numbers/{numbers[0]}",
                    "callbacks": "/console/callbacks",
                }
                renders = {name: _ms(await _timed(client, url, args.renders)) for name, url in pages.items()}
                metrics = _ms(await _timed(client, "/metrics", args.renders))
        finally:
            daemon.shutdown.set()
    return {
        "numbers": args.numbers,
        "active": args.active,
        "tick_ms": _ms(ticks),
        "renders_ms": renders,
        "metrics_scrape_ms": metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1000)
    parser.add_argument("--active", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args(argv)
    if not 1 <= args.active <= args.numbers:
        parser.error("--active: between 1 and --numbers")
    if args.seconds < 1 or args.renders < 1:
        parser.error("--seconds and --renders: at least 1")
    logs.configure("warning")
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-console-") as tmp:
        result = trio.run(measure, args, Path(tmp) / "data")
    if not args.json:
        print(
            f"{args.numbers} numbers ({args.active} active): tick {result['tick_ms']} ms; "
            f"pages {result['renders_ms']}; /metrics {result['metrics_scrape_ms']}",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
