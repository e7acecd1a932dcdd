"""Simulator throughput: POST /v1/messages per second and per server CPU-second.

The simulator runs as ``python -m dispatcher.simulator`` in a subprocess (status
webhooks off, rate limit out of reach); this process drives it over a few
keep-alive connections for ``--duration`` seconds after a warm-up and reads the
server's CPU time (utime+stime) from ``/proc/<pid>/stat``. The client writes
pre-built requests and parses only the status line and Content-Length, so it
costs less CPU than the server and the server stays the measured side (its CPU
utilisation is printed; near 100% of one core means it was saturated).
It also times the sans-IO core alone (``Simulator.respond``, no sockets).

Usage::

    .venv/bin/python bench/sim_throughput.py [--duration 5] [--connections 4]

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import cpu_seconds, free_port, start_simulator, stop_process, wait_ready  # noqa: E402
from dispatcher.simulator import SimNumber, SimRequest, Simulator  # noqa: E402

NUMBER = "+15550000001"
PASSWORD = "secret"
PREFIX = b"/15550000001"
RECIPIENTS = 1000
WARMUP = 0.5


def _message(i: int) -> bytes:
    body = {
        "to": f"1555123{i:04d}",
        "type": "text",
        "text": {"body": f"Your code is {i:06d}. It expires in 10 min."},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"host: sim"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Reader:
    """Reads whole responses (Content-Length framed) off one connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buf = b""

    async def response(self) -> tuple[int, bytes]:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = self._buf[:end].lower()
        start = head.index(b"content-length:") + 15
        length = int(head[start : head.index(b"\r\n", start) if b"\r\n" in head[start:] else len(head)])
        total = end + 4 + length
        while len(self._buf) < total:
            await self._fill()
        status, body = int(head[9:12]), self._buf[end + 4 : total]
        self._buf = self._buf[total:]
        return status, body

    async def _fill(self) -> None:
        chunk = await self._stream.receive_some(65_536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk


async def _drive(host: str, port: int, pid: int, connections: int, duration: float) -> dict[str, float]:
    async with await trio.open_tcp_stream(host, port) as stream:
        auth = b"Basic " + base64.b64encode(f"admin:{PASSWORD}".encode())
        await stream.send_all(_request(b"POST", PREFIX + b"/v1/users/login", [(b"authorization", auth)], b""))
        status, body = await _Reader(stream).response()
        assert status == 200, body
    token = json.loads(body)["users"][0]["token"].encode()
    headers = [(b"authorization", b"Bearer " + token), (b"content-type", b"application/json")]
    requests = [_request(b"POST", PREFIX + b"/v1/messages", headers, _message(i)) for i in range(RECIPIENTS)]

    start = trio.current_time()
    measure_from, stop_at = start + WARMUP, start + WARMUP + duration
    counts = {"ok": 0, "errors": 0}
    latencies: list[float] = []

    async def worker(offset: int) -> None:
        async with await trio.open_tcp_stream(host, port) as stream:
            reader = _Reader(stream)
            i = offset
            while (now := trio.current_time()) < stop_at:
                await stream.send_all(requests[i % RECIPIENTS])
                status, _ = await reader.response()
                i += 1
                if now >= measure_from:
                    counts["ok" if status == 201 else "errors"] += 1
                    latencies.append(trio.current_time() - now)

    cpu: dict[str, float] = {}

    async def meter() -> None:
        await trio.sleep_until(measure_from)
        cpu["server"], cpu["client"] = cpu_seconds(pid), time.process_time()
        await trio.sleep_until(stop_at)
        cpu["server"], cpu["client"] = cpu_seconds(pid) - cpu["server"], time.process_time() - cpu["client"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(meter)
        for c in range(connections):
            nursery.start_soon(worker, c * (RECIPIENTS // connections))
    latencies.sort()
    return {
        "requests": counts["ok"],
        "errors": counts["errors"],
        "server_cpu_s": cpu["server"],
        "client_cpu_s": cpu["client"],
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def _core_rate(seconds: float) -> float:
    """Sans-IO ``Simulator.respond`` calls per second for a valid send (no sockets, no webhooks)."""
    sim = Simulator([SimNumber(NUMBER, PASSWORD, rate=1e9, burst=10**9)], status_delays=None)
    auth = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    login = sim.respond(SimRequest("POST", "/15550000001/v1/users/login", {"authorization": auth}))
    token = json.loads(login.body)["users"][0]["token"]
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    reqs = [SimRequest("POST", "/15550000001/v1/messages", headers, _message(i)) for i in range(RECIPIENTS)]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for req in reqs:
            assert sim.respond(req).status == 201
        done += len(reqs)
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    port = free_port()
    server = start_simulator(
        port,
        *("--rate", "1e9", "--burst", "1000000000", "--status-delays", "off"),
        number=f"{NUMBER}:{PASSWORD}",
    )
    try:
        trio.run(wait_ready, f"http://127.0.0.1:{port}", b"/_sim/counters")
        stats = trio.run(_drive, "127.0.0.1", port, server.pid, args.connections, args.duration)
    finally:
        stop_process(server)
    core = trio.run(_core_rate, 1.0)

    result = {
        "sim_requests_per_s": round(stats["requests"] / args.duration),
        "sim_requests_per_cpu_s": round(stats["requests"] / stats["server_cpu_s"]),
        "server_cpu_util": round(stats["server_cpu_s"] / args.duration, 3),
        "client_cpu_util": round(stats["client_cpu_s"] / args.duration, 3),
        "sim_core_requests_per_s": round(core),
        "requests": int(stats["requests"]),
        "errors": int(stats["errors"]),
        "p50_ms": round(stats["p50_ms"], 3),
        "p99_ms": round(stats["p99_ms"], 3),
        "connections": args.connections,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
    }
    for key, value in result.items():
        print(f"{key:>26}  {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0 if stats["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
