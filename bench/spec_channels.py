"""The bench's numbers on spec channels: LINE, Vonage SMS, and WhatsApp Cloud said as a spec.

``--channel line`` and ``--channel sms`` (the Vonage spec) run against the simulator serving
the same spec files; ``--channel cloud-spec`` sends through the ``whatsapp-cloud`` spec to
the simulator's Cloud mode, the same simulator work as ``--channel cloud``, so the two runs
compare the spec-compiled channel with the hand-written one on the daemon's side alone.
"""

from __future__ import annotations

import json
from typing import Any, Final

from actors.http.pool import H11Pool
from bench import cloud
from dispatcher.channels.spec_channel import webhook_path
from dispatcher.core.channelspec.load import load_registry

KINDS: Final = {"line": "line", "sms": "vonage-sms", "cloud-spec": "whatsapp-cloud"}
"""bench channel name -> the spec kind its numbers are."""
PREFIXES: Final = {"line": "line:", "sms": "", "cloud-spec": "whatsapp:"}


def settings(channel: str, i: int) -> dict[str, str]:
    """Bench number ``i``'s settings of its kind (what its ``[numbers.settings]`` gives)."""
    if channel == "line":
        return {"channel_id": f"16567{i:05d}", "channel_secret": f"bench-line-secret-{i}"}
    if channel == "sms":
        return {
            "api_key": f"bench-key-{i}",
            "api_secret": f"bench-secret-{i}",
            "webhook_secret": f"bench-hook-{i}",
        }
    return {
        "phone_number_id": cloud.pnid(i),
        "access_token": cloud.access_token(i),
        "app_secret": cloud.app_secret(i),
    }


def recipient(channel: str, i: int) -> str:
    """Message ``i``'s recipient with its channel's prefix: a LINE user id, or a phone number
    (one per message on WhatsApp, for Meta's pair rate)."""
    if channel == "line":
        return f"line:U{i % 1000:032x}"  # 1000 round-robin, as On-Prem's
    if channel == "cloud-spec":
        return "whatsapp:" + cloud.recipient(i)
    return f"+1555123{i % 1000:04d}"


def sender(channel: str, digits: str) -> str:
    return f"{PREFIXES[channel]}+{digits}"


def number_section(
    channel: str, i: int, digits: str, account: str, where: str, rate: float, burst: int, max_in_flight: int
) -> str:
    """One ``[[numbers]]`` entry of a spec kind; ``where``: ``simulated = true`` or its endpoints."""
    values = "\n".join(f'{key} = "{value}"' for key, value in settings(channel, i).items())
    return f"""
[[numbers]]
number = "+{digits}"
account = "{account}"
channel = "{KINDS[channel]}"
{where}
enforce_window = false
rate = {rate}
burst = {burst}
max_in_flight = {max_in_flight}
[numbers.settings]
{values}
"""


def endpoint(channel: str, sim_url: str, digits: str) -> str:
    """Where a number sends in a simulator process: under its digits, or Graph's paths (cloud-spec)."""
    return sim_url if channel == "cloud-spec" else f"{sim_url}/{digits}"


def hook_url(channel: str, daemon_url: str, i: int, digits: str) -> str:
    loaded = load_registry().get(KINDS[channel])
    assert loaded is not None
    return daemon_url + webhook_path(loaded, settings(channel, i), f"+{digits}")


async def register(
    pool: H11Pool, channel: str, daemon_url: str, digits: list[str], rate: float, burst: int
) -> None:
    """Serve the bench numbers in a simulator process, their webhooks aimed at the daemon."""
    if channel == "cloud-spec":
        numbers = [
            cloud.sim_number(i, d, hook_url(channel, daemon_url, i, d), rate, burst)
            for i, d in enumerate(digits)
        ]
        await cloud.add_sim_numbers(pool, numbers)
        return
    for i, d in enumerate(digits):
        body = {
            "number": f"+{d}",
            "kind": KINDS[channel],
            "settings": settings(channel, i),
            "webhook_url": hook_url(channel, daemon_url, i, d),
            "rate": rate,
            "burst": burst,
        }
        resp = await pool.request(
            b"POST",
            b"/_sim/spec/numbers",
            [(b"content-type", b"application/json")],
            json.dumps(body).encode(),
        )
        if resp.status != 201:
            raise RuntimeError(f"simulator refused number {d}: {resp.status} {resp.body!r}")


def counted(every: dict[str, Any], digits: list[str]) -> tuple[int, int]:
    """(accepted, 429s) of the bench numbers in ``GET /_sim/counters``'s numbers."""
    mine = [every[f"+{d}"] for d in digits]
    return sum(c["accepted"] for c in mine), sum(c["rejected_429"] for c in mine)
