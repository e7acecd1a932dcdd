"""Client cost per request: plain h11 loop (the floor) vs H11Pool vs httpx, in requests per CPU-second.

bench.floor's plain h11 server runs in a subprocess, so only the client's CPU
is measured here (``time.process_time`` of this process). Each case runs for
``--duration`` seconds after a short warm-up; the request is the hot path's
shape: a POST of a ~200-byte JSON body with an auth header, a small JSON reply.

Usage::

    .venv/bin/python bench/client_floor.py                 # table on stderr, one JSON line on stdout
    .venv/bin/python bench/client_floor.py --profile pool:50   # cProfile one case instead

Cases are ``floor``, ``pool:N`` and ``httpx:N`` (N requests in flight).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.http.pool import H11Pool
from bench.floor import BODY, HEADERS, POOL_INFLIGHT, TARGET, h11_loop_request, load_loop

HTTPX_INFLIGHT = (1, 10, 50)


# -- clients -----------------------------------------------------------------------------------------


async def measure(name: str, make_worker: Callable[[], Awaitable[Callable[[], Awaitable[None]]]], n: int,
                  duration: float) -> dict[str, float]:  # fmt: skip
    """Run ``n`` workers calling the request function until the deadline; count after a warm-up."""
    request = await make_worker()
    done, wall, cpu = await load_loop(request, n, duration, time.process_time)
    result = {
        "requests": done,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "per_cpu_s": round(done / cpu),
    }
    print(f"{name:<12} {n:>4} in flight  {done:>7} req  {cpu:6.2f} cpu-s  {wall:5.2f} s  "
          f"{done / cpu:8.0f} req/cpu-s  {done / wall:8.0f} req/s", file=sys.stderr)  # fmt: skip
    return result


def floor_case(port: int) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    """One trio stream, one h11.Connection, h11 used the ordinary way: the cheapest correct client."""

    async def make() -> Callable[[], Awaitable[None]]:
        return h11_loop_request(await trio.open_tcp_stream("127.0.0.1", port), port)

    return make


def pool_case(pool: H11Pool) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    async def make() -> Callable[[], Awaitable[None]]:
        headers = HEADERS

        async def request() -> None:
            await pool.request(b"POST", TARGET, headers, BODY)

        return request

    return make


def httpx_case(client: httpx.AsyncClient) -> Callable[[], Awaitable[Callable[[], Awaitable[None]]]]:
    async def make() -> Callable[[], Awaitable[None]]:
        headers = {name.decode(): value.decode() for name, value in HEADERS}
        target = TARGET.decode()

        async def request() -> None:
            response = await client.post(target, content=BODY, headers=headers)
            await response.aread()

        return request

    return make


async def run_case(case: str, port: int, duration: float) -> dict[str, float]:
    kind, _, n_text = case.partition(":")
    n = int(n_text or 1)
    if kind == "floor":
        return await measure("h11 floor", floor_case(port), 1, duration)
    if kind == "pool":
        pool = H11Pool(f"http://127.0.0.1:{port}")
        try:
            return await measure("H11Pool", pool_case(pool), n, duration)
        finally:
            await pool.aclose()
    if kind == "httpx":
        limits = httpx.Limits(max_connections=max(n, 10), max_keepalive_connections=max(n, 10))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            return await measure("httpx", httpx_case(client), n, duration)
    raise SystemExit(f"unknown case {case!r}")


async def run_all(port: int, duration: float) -> dict[str, object]:
    floor = (await run_case("floor", port, duration))["per_cpu_s"]
    pool = {n: (await run_case(f"pool:{n}", port, duration))["per_cpu_s"] for n in POOL_INFLIGHT}
    via_httpx = {n: (await run_case(f"httpx:{n}", port, duration))["per_cpu_s"] for n in HTTPX_INFLIGHT}
    ratios = {n: round(v / floor, 2) for n, v in pool.items()}
    print("H11Pool / floor per CPU-second: "
          + ", ".join(f"{n} in flight {r:.2f}x" for n, r in ratios.items()), file=sys.stderr)  # fmt: skip
    return {
        "unit": "requests per client CPU-second",
        "floor_h11_1": floor,
        "h11pool": pool,
        "h11pool_max_connections": 16,
        "httpx": via_httpx,
        "h11pool_over_floor": ratios,
        "duration_s": duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.5, help="seconds measured per case")
    parser.add_argument("--profile", metavar="CASE", help="cProfile one case (floor, pool:N, httpx:N)")
    parser.add_argument("cases", nargs="*", help="run only these cases (table only, no JSON)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--serve", "h11"], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        if args.cases:
            for case in args.cases:
                trio.run(run_case, case, port, args.duration)
            return
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            trio.run(run_case, args.profile, port, args.duration)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
            return
        print(json.dumps(trio.run(run_all, port, args.duration)))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
