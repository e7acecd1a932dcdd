"""What every process-level bench stands on: the daemon and simulator processes, their configs, the load.

A bench runs the daemon as ``wadispatch run`` (``start_daemon``) on a generated
config (``write_config``: N numbers, their limits, the simulator embedded or
not), the simulator as its own process when it is measured apart
(``start_simulator``, numbers added through its control API:
``register_numbers``), waits for them (``wait_ready``), drives the front door
with Twilio-form or batch creates (``create_bodies``, ``batch_bodies``), and
reads CPU time and RSS of the processes under test from /proc (not its own).
The Cloud channel's numbers and counters are in ``bench.cloud``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from bench import cloud, spec_channels

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "sandbox-auth-token"
PASSWORD = "Bench-Passw0rd!"


def number_digits(i: int) -> str:
    return f"1555000{i:04d}"


def webhook_secret(i: int) -> str:
    return f"bench-webhook-secret-{i}"


def embedded_config(
    data_dir: Path,
    numbers: list[str] | tuple[str, ...],
    *,
    account: str,
    auth_token: str,
    number_extra: str = "",
    extra: str = "",
    map_size_mb: int = 1024,
) -> str:
    """The config text of a daemon in the bench's own process: ``numbers`` served by the
    embedded simulator, one account; ``number_extra`` goes in each number's table."""
    tables = "".join(
        f"""
[[numbers]]
number = "{n}"
account = "{account}"
simulated = true
password = {{ value = "Bench-Passw0rd!" }}
webhook_secret = {{ value = "bench-webhook-secret-{i}" }}
{number_extra}
"""
        for i, n in enumerate(numbers)
    )
    return f"""
[server]
listen = "127.0.0.1:0"
graceful_timeout = 1.0
drain_timeout = 1.0
[store]
data_dir = "{data_dir}"
map_size_mb = {map_size_mb}
[simulator]
listen = "127.0.0.1:0"
[[accounts]]
sid = "{account}"
auth_token = {{ value = "{auth_token}" }}
{extra}
{tables}
"""


def write_config(
    data_dir: Path,
    port: int,
    sim_port: int,
    numbers: int,
    rate: float,
    webhook_batch: int,
    *,
    burst: int | None = None,
    embedded: bool = True,
    channel: str = "onprem",
    max_in_flight: int = 64,
    on_ambiguous: str = "retry",
) -> Path:
    """N numbers on a simulator enforcing the same ``rate``/``burst`` as the numbers.

    ``embedded``: the daemon runs the simulator itself (``simulated = true``);
    otherwise the numbers point at a simulator process on ``sim_port`` (``start_simulator``).
    ``channel = "cloud"``: Cloud API numbers (``bench.cloud``), ``rate`` as their throughput.
    ``on_ambiguous``: the On-Prem numbers' policy (``"fail"``: at-most-once).
    """
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
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
"""
    ]
    if embedded:
        parts.append(
            f"""
[simulator]
listen = "127.0.0.1:{sim_port}"
rate = {rate}
burst = {burst}
webhook_batch = {webhook_batch}
"""
        )
    for i in range(numbers):
        if channel in spec_channels.KINDS:
            endpoint = spec_channels.endpoint(channel, f"http://127.0.0.1:{sim_port}", number_digits(i))
            where = "simulated = true" if embedded else f'endpoints = ["{endpoint}"]'
            parts.append(
                spec_channels.number_section(
                    channel, i, number_digits(i), ACCOUNT, where, rate, burst, max_in_flight
                )
            )
            continue
        if channel == "cloud":
            where = "simulated = true" if embedded else f'endpoints = ["http://127.0.0.1:{sim_port}"]'
            section = cloud.number_section(i, number_digits(i), ACCOUNT, where, rate, burst, max_in_flight)
            parts.append(section)
            continue
        where = (
            "simulated = true"
            if embedded
            # Load goes to customers who never wrote: no 24 h window to enforce.
            else f'endpoints = ["http://127.0.0.1:{sim_port}/{number_digits(i)}"]\nenforce_window = false'
        )
        parts.append(
            f"""
[[numbers]]
number = "+{number_digits(i)}"
account = "{ACCOUNT}"
{where}
password = {{ value = "{PASSWORD}" }}
webhook_secret = {{ value = "{webhook_secret(i)}" }}
rate = {rate}
burst = {burst}
max_in_flight = {max_in_flight}
on_ambiguous = "{on_ambiguous}"
"""
        )
    path = data_dir.parent / "bench.toml"
    path.write_text("".join(parts))
    return path


async def wait_until_answers(pool: H11Pool, path: bytes, timeout: float = 30.0) -> None:
    """Until ``GET path`` answers 200 (the process is up and serving)."""
    with trio.fail_after(timeout):
        while True:
            try:
                if (await pool.request(b"GET", path, [], b"")).status == 200:
                    return
            except Exception:
                pass
            await trio.sleep(0.1)


async def wait_ready(url: str, path: bytes = b"/healthz", timeout: float = 30.0) -> None:
    """Until the daemon (or, with its control path, the simulator) at ``url`` answers ``path``."""
    pool = H11Pool(url, max_connections=1)
    try:
        await wait_until_answers(pool, path, timeout)
    finally:
        await pool.aclose()


def start_simulator(
    sim_port: int, *options: str, number: str = "+19990000000:unused-Passw0rd!"
) -> subprocess.Popen[bytes]:
    """The simulator as its own process, with CLI ``options`` (numbers are added by ``register_numbers``).

    ``number``: the one number the CLI serves from the start (by default one nobody sends to: the CLI
    would serve a default one otherwise).
    """
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dispatcher.simulator",
            "--listen",
            f"127.0.0.1:{sim_port}",
            "--number",
            number,
            *options,
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


async def register_numbers(sim_url: str, port: int, numbers: int, rate: float, burst: int) -> None:
    """Serve the bench numbers in the simulator process, their webhooks aimed at the daemon."""
    pool = H11Pool(sim_url, max_connections=1)
    try:
        await wait_until_answers(pool, b"/_sim/counters")
        for i in range(numbers):
            body = json.dumps(
                {
                    "number": f"+{number_digits(i)}",
                    "password": PASSWORD,
                    "webhook_url": f"http://127.0.0.1:{port}/webhooks/onprem/{number_digits(i)}/{webhook_secret(i)}",
                    "rate": rate,
                    "burst": burst,
                }
            ).encode()
            resp = await pool.request(
                b"POST", b"/_sim/numbers", [(b"content-type", b"application/json")], body
            )
            if resp.status != 201:
                raise RuntimeError(f"simulator refused number {i}: {resp.status} {resp.body!r}")
    finally:
        await pool.aclose()


async def register_spec_numbers(
    sim_url: str, channel: str, daemon_url: str, digits: list[str], rate: float, burst: int
) -> None:
    """Wait for the simulator at ``sim_url``, then serve the bench's numbers of a spec channel there."""
    pool = H11Pool(sim_url, max_connections=1)
    try:
        await wait_until_answers(pool, b"/_sim/counters")
        await spec_channels.register(pool, channel, daemon_url, digits, rate, burst)
    finally:
        await pool.aclose()


async def register_cloud_numbers(sim_url: str, numbers: list[dict[str, Any]]) -> None:
    """Wait for the simulator at ``sim_url``, then serve ``numbers`` (``bench.cloud.sim_number``) there."""
    pool = H11Pool(sim_url, max_connections=1)
    try:
        await wait_until_answers(pool, b"/_sim/cloud/numbers")
        await cloud.add_sim_numbers(pool, numbers)
    finally:
        await pool.aclose()


async def sim_counts(pool: H11Pool) -> tuple[int, int]:
    """(messages the simulator accepted, 429s it answered), over every number."""
    resp = await pool.request(b"GET", b"/_sim/counters", [], b"")
    numbers = json.loads(resp.body)["numbers"].values()
    return sum(c["accepted"] for c in numbers), sum(c["rejected_429"] for c in numbers)


def front_headers() -> list[tuple[bytes, bytes]]:
    auth = b"Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode())
    return [(b"authorization", auth), (b"content-type", b"application/x-www-form-urlencoded")]


BATCH_PATH = b"/v1/messages:batch"


def create_path() -> bytes:
    return f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()


def recipient(i: int, channel: str = "onprem") -> str:
    """Message ``i``'s recipient with its channel's prefix: 1000 of them round-robin, or one per
    message on Cloud (pair rate); a spec channel's own (``bench.spec_channels``)."""
    if channel in spec_channels.KINDS:
        return spec_channels.recipient(channel, i)
    return "whatsapp:" + (cloud.recipient(i) if channel == "cloud" else f"+1555123{i % 1000:04d}")


def sender(i: int, numbers: int, channel: str = "onprem") -> str:
    """Message ``i``'s sender address, round-robin over the numbers."""
    digits = number_digits(i % numbers)
    return spec_channels.sender(channel, digits) if channel in spec_channels.KINDS else f"whatsapp:+{digits}"


def create_bodies(numbers: int, messages: int, channel: str = "onprem") -> list[bytes]:
    """Twilio-form creates, round-robin over the numbers (recipients: ``recipient``)."""
    return [
        urllib.parse.urlencode(
            {
                "From": sender(i, numbers, channel),
                "To": recipient(i, channel),
                "Body": f"Your code is {i:06d}. It expires in 10 minutes.",
            }
        ).encode()
        for i in range(messages)
    ]


def batch_bodies(numbers: int, messages: int, size: int, channel: str = "onprem") -> list[tuple[bytes, int]]:
    """``POST /v1/messages:batch`` JSON arrays of up to ``size`` messages: (body, count)."""
    items = [
        {
            "from": sender(i, numbers, channel),
            "to": recipient(i, channel),
            "body": f"Your code is {i:06d}. It expires in 10 minutes.",
        }
        for i in range(messages)
    ]
    return [
        (json.dumps(items[lo : lo + size]).encode(), len(items[lo : lo + size]))
        for lo in range(0, messages, size)
    ]


async def post_creates(
    url: str, headers: list[tuple[bytes, bytes]], bodies: list[bytes], concurrency: int
) -> float:
    """``POST`` each Twilio-form create in ``bodies`` over ``concurrency`` keep-alive connections;
    the seconds it took. Exits the bench if one is not a 201."""
    pool = H11Pool(url, max_connections=concurrency)
    path = create_path()
    todo = iter(bodies)

    async def worker() -> None:
        for body in todo:
            resp = await pool.request(b"POST", path, headers, body)
            if resp.status != 201:
                raise SystemExit(f"create refused: {resp.status} {resp.body[:300]!r}")

    try:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return time.perf_counter() - start
    finally:
        await pool.aclose()


async def serve_lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan of an app with nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def start_daemon(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the daemon drains, the simulator stops), then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- process stats ---------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
