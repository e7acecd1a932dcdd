"""The peer: the same messages sent the way a Python user would without a dispatcher.

The ``pywa`` async client (``pywa_async.WhatsApp``, on asyncio and httpx) sends
straight at a WhatsApp Cloud API endpoint: no durability, no rate limit, no
retries. Its requests to ``graph.facebook.com`` are redirected to ``--endpoint``
(the simulator's Cloud mode) by an httpx transport that only rewrites the
scheme, host and port, so pywa builds and parses every request itself.

Message ``i`` is bench.e2e ``--channel cloud``'s message ``i`` (same body, same
recipient: one per message). It sweeps 1, 4, 16 and 64 sends in flight and reports the best ``sent_per_s``
(plus the client's CPU per send): the figure bench.e2e ``--channel cloud``
divides by, measured in the same run against the same simulator.

Usage::

    .venv/bin/python -m bench.peer --endpoint http://127.0.0.1:PORT --messages M [--json]

Prints a summary on stderr and one JSON line on stdout. Needs ``pywa``
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from typing import Any

import httpx

from bench.cloud import recipient

SWEEP = (1, 4, 16, 64)
PHONE_ID = "15550000001"
TOKEN = "bench-cloud-token"


class Redirect(httpx.AsyncBaseTransport):
    """Send every request to ``endpoint`` instead of the URL's scheme, host and port."""

    def __init__(self, endpoint: str, inner: httpx.AsyncBaseTransport) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"--endpoint must be http(s)://host[:port][/prefix], got {endpoint!r}")
        self._scheme = url.scheme
        self._host = url.hostname
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            scheme=self._scheme, host=self._host, port=self._port, path=self._prefix + request.url.path
        )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def run_level(endpoint: str, phone_id: str, token: str, messages: int, inflight: int) -> dict[str, Any]:
    """``messages`` sends with ``inflight`` tasks sharing one pywa client."""
    from pywa_async import WhatsApp

    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    transport = Redirect(endpoint, httpx.AsyncHTTPTransport(limits=limits))
    session = httpx.AsyncClient(transport=transport, timeout=30.0)
    wa = WhatsApp(phone_id=phone_id, token=token, session=session)
    next_index = 0
    sent = errors = 0
    first_error = ""

    async def worker() -> None:
        nonlocal next_index, sent, errors, first_error
        while next_index < messages:
            i = next_index
            next_index += 1
            try:
                result = await wa.send_message(
                    to=recipient(i).lstrip("+"), text=f"Your code is {i:06d}. It expires in 10 minutes."
                )
            except Exception as exc:  # pywa raises its WhatsAppError tree and httpx errors
                errors += 1
                first_error = first_error or repr(exc)
                continue
            if result.id:
                sent += 1

    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await session.aclose()
    return {
        "inflight": inflight,
        "sent": sent,
        "errors": errors,
        "first_error": first_error,
        "sent_per_s": round(sent / wall, 1),
        "client_cpu_ms_per_send": round(cpu / max(sent, 1) * 1000, 3),
    }


def run(endpoint: str, phone_id: str, token: str, messages: int, sweep: tuple[int, ...]) -> dict[str, Any]:
    levels = []
    for inflight in sweep:
        level = asyncio.run(run_level(endpoint, phone_id, token, messages, inflight))
        print(
            f"{inflight:>3} in flight: {level['sent']} sent, {level['errors']} errors, "
            f"{level['sent_per_s']} sent/s, {level['client_cpu_ms_per_send']} client CPU ms/send",
            file=sys.stderr,
            flush=True,
        )
        levels.append(level)
    best = max(levels, key=lambda level: level["sent_per_s"])
    return {
        "client": "pywa_async",
        "messages": messages,
        "sent_per_s": best["sent_per_s"],
        "best_inflight": best["inflight"],
        "errors": sum(level["errors"] for level in levels),
        "levels": levels,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint", required=True, help="Cloud API base URL (stands in for graph.facebook.com)"
    )
    parser.add_argument("--phone-id", default=PHONE_ID)
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--messages", type=int, default=2000, help="sends per concurrency level")
    parser.add_argument(
        "--sweep", default=",".join(map(str, SWEEP)), help="in-flight levels, comma-separated"
    )
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args(argv)
    try:
        sweep = tuple(int(n) for n in args.sweep.split(","))
    except ValueError:
        parser.error(f"--sweep must be comma-separated integers, got {args.sweep!r}")
    if args.messages < 1 or not sweep or min(sweep) < 1:
        parser.error("--messages and every --sweep level must be >= 1")
    try:
        Redirect(args.endpoint, httpx.AsyncHTTPTransport())
    except ValueError as exc:
        parser.error(str(exc))
    result = run(args.endpoint, args.phone_id, args.token, args.messages, sweep)
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
