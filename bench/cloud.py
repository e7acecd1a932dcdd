"""The Cloud API channel in the benches: numbers, simulator registration, counters, the peer run.

A bench Cloud number is ``+1555000NNNN`` with phone number id ``10654NNNNNNNNNN``
and its own token and app secret. Its messaging tier is ``"unlimited"`` and its
pair rate is Meta's (one message per 6 s per recipient, bursts of 45), so the
load goes to distinct recipients (``recipient``): one per message, as OTP
traffic does. ``sim_429`` for Cloud counts Meta's three refusals (throughput
130429, pair rate 131056, tier 131048), which Graph answers with HTTP 400.

The peer (``bench.peer``, pywa) sends through its own simulator number with
the daemon's whole throughput (``rate`` x numbers) and no webhook URL: the
same simulator process, before the daemon's load, so the ratio compares two
clients of one server on one machine state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from actors.http.pool import H11Pool

ROOT = Path(__file__).resolve().parent.parent
MAX_THROUGHPUT = 1000.0  # Meta's highest per-number throughput, and the config's ceiling
PEER_NUMBER = "+19990000001"
PEER_PNID = "19990000000001"
PEER_TOKEN = "bench-peer-token"


def pnid(i: int) -> str:
    return f"10654{i:010d}"


def access_token(i: int) -> str:
    return f"bench-cloud-token-{i}"


def app_secret(i: int) -> str:
    return f"bench-app-secret-{i}"


def recipient(i: int) -> str:
    """Message ``i``'s recipient, distinct per message (up to 10 million): no pair-rate waits."""
    return f"+1650{i % 10_000_000:07d}"


def number_section(
    i: int, digits: str, account: str, where: str, rate: float, burst: int, max_in_flight: int
) -> str:
    """One ``[[numbers]]`` entry on the Cloud channel; ``where``: ``simulated = true`` or its endpoints."""
    return f"""
[[numbers]]
number = "+{digits}"
account = "{account}"
channel = "cloud"
{where}
enforce_window = false
max_in_flight = {max_in_flight}
[numbers.cloud]
phone_number_id = "{pnid(i)}"
access_token = {{ value = "{access_token(i)}" }}
app_secret = {{ value = "{app_secret(i)}" }}
verify_token = {{ value = "bench-verify-token-{i}" }}
throughput = {rate}
throughput_burst = {burst}
messaging_limit = "unlimited"
"""


def sim_number(i: int, digits: str, webhook_url: str | None, rate: float, burst: int) -> dict[str, Any]:
    """The simulator's ``CloudNumber`` for bench number ``i``: Meta's limits as the daemon has them."""
    return {
        "number": f"+{digits}",
        "phone_number_id": pnid(i),
        "access_token": access_token(i),
        "app_secret": app_secret(i),
        "webhook_url": webhook_url,
        "throughput": rate,
        "throughput_burst": burst,
        "messaging_limit": None,
    }


def peer_number(rate: float, burst: int) -> dict[str, Any]:
    return {
        "number": PEER_NUMBER,
        "phone_number_id": PEER_PNID,
        "access_token": PEER_TOKEN,
        "app_secret": "bench-peer-secret",
        "webhook_url": None,
        "throughput": rate,
        "throughput_burst": burst,
        "messaging_limit": None,
    }


async def add_sim_numbers(pool: H11Pool, numbers: list[dict[str, Any]]) -> None:
    """Serve ``numbers`` (``CloudNumber`` objects) in a simulator through its control API."""
    for number in numbers:
        resp = await pool.request(
            b"POST",
            b"/_sim/cloud/numbers",
            [(b"content-type", b"application/json")],
            json.dumps(number).encode(),
        )
        if resp.status != 201:
            raise RuntimeError(f"simulator refused {number['number']}: {resp.status} {resp.body!r}")


async def counters(pool: H11Pool, numbers: int) -> dict[str, dict[str, int]]:
    """Per bench number (by phone number id): the simulator's Cloud counters, in one request."""
    resp = await pool.request(b"GET", b"/_sim/cloud/counters", [], b"")
    every: dict[str, dict[str, int]] = json.loads(resp.body)
    return {pnid(i): every[pnid(i)] for i in range(numbers)}


def refused(figures: dict[str, int]) -> int:
    """Meta's limit refusals in one number's counters (the Cloud form of a 429)."""
    return figures["throughput_limited"] + figures["pair_limited"] + figures["tier_limited"]


async def sim_counts(pool: H11Pool, numbers: int) -> tuple[int, int]:
    """(messages the simulator accepted, limit refusals), over the bench's Cloud numbers."""
    every = (await counters(pool, numbers)).values()
    return sum(c["accepted"] for c in every), sum(refused(c) for c in every)


def run_peer(sim_url: str, messages: int, sweep: str, timeout: float = 600.0) -> dict[str, Any]:
    """``bench.peer`` in its own process against the simulator's peer number; its JSON result."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.peer",
            "--endpoint",
            sim_url,
            "--phone-id",
            PEER_PNID,
            "--token",
            PEER_TOKEN,
            "--messages",
            str(messages),
            "--sweep",
            sweep,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"bench.peer printed nothing (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
