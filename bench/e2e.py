"""End to end: load generator -> front door -> LMDB -> actors -> simulator, in separate processes.

The daemon runs as ``wadispatch run`` in a subprocess with a generated config:
N simulated numbers whose rate limits are set out of reach (this measures the
pipeline, not the WhatsApp limit), the embedded simulator on a known port with
status webhooks batched. This process posts M messages through the
Twilio-compatible front door over keep-alive connections (H11Pool), then polls
the simulator's counters until every message reached it.

Usage::

    .venv/bin/python -m bench.e2e --numbers 3 --messages 3000 [--concurrency 32] [--json]

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import trio

from actors.h11pool import H11Pool
from bench.procstat import cpu_seconds, free_port, rss_mb

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "sandbox-auth-token"


def write_config(
    data_dir: Path,
    port: int,
    sim_port: int,
    numbers: int,
    rate: float,
    webhook_batch: int,
    *,
    burst: int | None = None,
) -> Path:
    """N simulated numbers; the simulator enforces the same ``rate``/``burst`` as the numbers."""
    burst = int(rate) if burst is None else burst
    parts = [
        f"""
[server]
listen = "127.0.0.1:{port}"
[store]
data_dir = "{data_dir}"
map_size_mb = 2048
[log]
level = "warning"
[simulator]
listen = "127.0.0.1:{sim_port}"
rate = {rate}
burst = {burst}
webhook_batch = {webhook_batch}
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
"""
    ]
    for i in range(numbers):
        parts.append(
            f"""
[[numbers]]
number = "+1555000{i:04d}"
account = "{ACCOUNT}"
simulated = true
password = {{ value = "Bench-Passw0rd!" }}
webhook_secret = {{ value = "bench-{i}" }}
rate = {rate}
burst = {burst}
max_in_flight = 64
"""
        )
    path = data_dir.parent / "bench.toml"
    path.write_text("".join(parts))
    return path


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    pool = H11Pool(url, max_connections=1)
    with trio.fail_after(timeout):
        while True:
            try:
                resp = await pool.request(b"GET", b"/healthz", [], b"")
                if resp.status == 200:
                    break
            except Exception:
                pass
            await trio.sleep(0.1)
    await pool.aclose()


async def sim_accepted(pool: H11Pool) -> int:
    resp = await pool.request(b"GET", b"/_sim/counters", [], b"")
    return sum(c["accepted"] for c in json.loads(resp.body)["numbers"].values())


def front_headers() -> list[tuple[bytes, bytes]]:
    auth = b"Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
    return [(b"authorization", auth), (b"content-type", b"application/x-www-form-urlencoded")]


def create_path() -> bytes:
    return f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()


def create_bodies(numbers: int, messages: int) -> list[bytes]:
    """Twilio-form creates, round-robin over the numbers, 1000 recipients."""
    return [
        urllib.parse.urlencode(
            {
                "From": f"whatsapp:+1555000{i % numbers:04d}",
                "To": f"whatsapp:+1555123{i % 1000:04d}",
                "Body": f"Your code is {i:06d}. It expires in 10 minutes.",
            }
        ).encode()
        for i in range(messages)
    ]


def start_daemon(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the daemon drains), then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def drive(args: argparse.Namespace, url: str, sim_url: str, pid: int) -> dict[str, float]:
    headers, path = front_headers(), create_path()
    bodies = create_bodies(args.numbers, args.messages)
    front = H11Pool(url, max_connections=args.concurrency, request_timeout=30.0)
    sim = H11Pool(sim_url, max_connections=1)
    latencies: list[float] = []
    errors = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, errors
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            t0 = time.perf_counter()
            resp = await front.request(b"POST", path, headers, body)
            latencies.append(time.perf_counter() - t0)
            if resp.status != 201:
                errors += 1

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(args.concurrency):
            nursery.start_soon(worker)
    accepted_s = time.perf_counter() - t0
    delivered = 0
    with trio.move_on_after(args.timeout):
        while delivered < args.messages - errors:
            delivered = await sim_accepted(sim)
            await trio.sleep(0.02)
    delivered_s = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    await front.aclose()
    await sim.aclose()
    lat = sorted(latencies)
    return {
        "numbers": args.numbers,
        "messages": args.messages,
        "concurrency": args.concurrency,
        "accepted_per_s": round((args.messages - errors) / accepted_s, 1),
        "delivered_per_s": round(delivered / delivered_s, 1),
        "accept_p50_ms": round(statistics.median(lat) * 1000, 2),
        "accept_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
        "errors": errors,
        "lost": args.messages - errors - delivered,
        "daemon_cpu_s_per_1k": round(cpu / args.messages * 1000, 3),
        "daemon_rss_mb": round(rss_mb(pid), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=3)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=100_000.0, help="per-number limit (default: out of reach)"
    )
    parser.add_argument("--webhook-batch", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-") as tmp:
        port, sim_port = free_port(), free_port()
        cfg = write_config(Path(tmp) / "data", port, sim_port, args.numbers, args.rate, args.webhook_batch)
        proc = start_daemon(cfg)
        try:
            url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
            trio.run(wait_ready, url)
            result = trio.run(drive, args, url, sim_url, proc.pid)
        finally:
            stop_daemon(proc)
    for key, value in result.items():
        sys.stderr.write(f"{key:>22}: {value}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
