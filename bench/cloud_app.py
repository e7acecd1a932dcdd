"""Cloud webhook ingest at the app-level URL against the per-number URLs, on one daemon and across two.

Four Cloud numbers, one in each bucket of a B = 4 root. Each round posts ``--deliveries`` Meta-shaped
deliveries of customers' text messages (``--messages`` per number per delivery, every id new, so
nothing is deduplicated away) over ``--concurrency`` connections, three ways:

- ``per_number``: one daemon; each delivery as four POSTs, one per number's own URL;
- ``app``: one daemon; each delivery as one POST to ``/webhooks/cloud`` naming all four numbers;
- ``app_two_daemons``: two daemons (flock) on one root, each owning two buckets; every delivery to
  daemon 0, which applies its buckets' changes and hands the same signed body to daemon 1 for its.

Each way: messages stored per second, and CPU per 1,000 messages of the daemon(s). At the end every
message must be stored once (the daemons' list, counted by number). One JSON line with ``--json``.

Usage::

    .venv/bin/python -m bench.cloud_app --deliveries 400 --messages 25 [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from bench._harness import (
    ACCOUNT,
    TOKEN,
    cpu_seconds,
    free_port,
    front_headers,
    start_daemon,
    stop_process,
    wait_ready,
)

SECRET = "bench-app-secret-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"
CUSTOMER = "16505551234"
# One number per bucket of four, each with its phone number id.
NUMBERS = {"+15550009992": "300000000000000", "+15550009990": "300000000000001"}
NUMBERS |= {"+15550009991": "300000000000002", "+15550009995": "300000000000003"}


def config(data: Path, port: int, cluster: bool) -> Path:
    numbers = "".join(
        f"""
[[numbers]]
number = "{number}"
account = "{ACCOUNT}"
channel = "cloud"
endpoints = ["http://127.0.0.1:9"]
[numbers.cloud]
phone_number_id = "{pnid}"
access_token = {{ value = "EAAbench" }}
app_secret = {{ value = "{SECRET}" }}
verify_token = {{ value = "bench-verify-0123456789" }}
"""
        for number, pnid in NUMBERS.items()
    )
    text = f"""
[server]
listen = "127.0.0.1:{port}"
[store]
data_dir = "{data}"
buckets = 4
map_size_mb = 1024
[log]
level = "warning"
[watch]
check_at_start = false
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
{"[cluster]" if cluster else ""}
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
{numbers}
"""
    path = data.parent / f"d{port}.toml"
    path.write_text(text)
    return path


def entry(number: str, pnid: str, tag: str, count: int) -> dict[str, Any]:
    messages = [
        {
            "from": CUSTOMER,
            "id": f"wamid.{tag}.{pnid}.{i}",
            "timestamp": "1697043223",
            "text": {"body": f"{tag} {i}"},
            "type": "text",
        }
        for i in range(count)
    ]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": number.lstrip("+"), "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": CUSTOMER}],
        "messages": messages,
    }
    return {"id": "1234567890", "changes": [{"field": "messages", "value": value}]}


def signed(entries: list[dict[str, Any]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"object": "whatsapp_business_account", "entry": entries}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, [(b"content-type", b"application/json"), (b"x-hub-signature-256", sig.encode())]


def requests(way: str, round_: int, deliveries: int, messages: int) -> list[tuple[bytes, bytes, list[Any]]]:
    """(target, body, headers) of every POST of a round."""
    out = []
    for d in range(deliveries):
        tag = f"{way}{round_}.{d}"
        entries = [(n, entry(n, pnid, tag, messages)) for n, pnid in NUMBERS.items()]
        if way == "per_number":
            for number, e in entries:
                body, headers = signed([e])
                out.append((f"/webhooks/cloud/{number.lstrip('+')}".encode(), body, headers))
        else:
            body, headers = signed([e for _, e in entries])
            out.append((b"/webhooks/cloud", body, headers))
    return out


async def post_all(
    url: str, posts: list[tuple[bytes, bytes, list[Any]]], concurrency: int
) -> tuple[float, int]:
    """Every POST answered 200 (a 503 posted again after its Retry-After, as Meta redelivers);
    returns the seconds taken and how many were posted again."""
    pool = H11Pool(url, max_connections=concurrency, request_timeout=60.0)
    queue = list(reversed(posts))
    again = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal again
        while queue:
            target, body, headers = queue.pop()
            resp = await pool.request(b"POST", target, headers, body)
            while resp.status == 503 and again < 1000:
                again += 1
                await trio.sleep(0.05)
                resp = await pool.request(b"POST", target, headers, body)
            if resp.status != 200:
                raise RuntimeError(f"{target!r}: {resp.status} {resp.body[:200]!r}")

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - start
    await pool.aclose()
    return elapsed, again


async def stored(url: str) -> int:
    """Customer messages stored, counted through the list (every bucket)."""
    pool = H11Pool(url, max_connections=1, request_timeout=60.0)
    count, page = 0, f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?PageSize=1000".encode()
    while page:
        resp = await pool.request(b"GET", page, front_headers()[:1], b"")
        doc = json.loads(resp.body)
        count += len(doc["messages"])
        page = (doc.get("next_page_uri") or "").encode()
    await pool.aclose()
    return count


async def settled(urls: list[str], timeout: float = 30.0) -> None:
    """Each daemon owns its share, two buckets (flock balances within a second or so)."""
    headers = [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    with trio.fail_after(timeout):
        while True:
            shares = []
            for url in urls:
                pool = H11Pool(url, max_connections=1)
                resp = await pool.request(b"GET", b"/admin/v1/status", headers, b"")
                await pool.aclose()
                shares.append([b["bucket"] for b in json.loads(resp.body)["buckets"] if b["owned"]])
            if all(len(share) == 2 for share in shares):
                return
            await trio.sleep(0.1)


async def measure(way: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    two = way == "app_two_daemons"
    data = tmp / way / "data"
    data.mkdir(parents=True)
    ports = [free_port() for _ in range(2 if two else 1)]
    procs = []
    try:
        for port in ports:
            procs.append(start_daemon(config(data, port, cluster=two)))
            await wait_ready(f"http://127.0.0.1:{port}")
        if two:
            await settled([f"http://127.0.0.1:{port}" for port in ports])
        url = f"http://127.0.0.1:{ports[0]}"
        # Warm up (and, with two daemons, until this one's owner table has caught up with the other's).
        await post_all(url, requests(way, 0, 10, args.messages), args.concurrency)
        posts = requests(way, 1, args.deliveries, args.messages)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        elapsed, again = await post_all(url, posts, args.concurrency)
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        total = args.deliveries * args.messages * len(NUMBERS)
        expected = total + 10 * args.messages * len(NUMBERS)
        found = await stored(url)
        if found != expected:
            raise RuntimeError(f"{way}: {found} messages stored, {expected} posted")
        return {
            "way": way,
            "messages_per_s": round(total / elapsed),
            "cpu_ms_per_1000": round(cpu / total * 1e6, 1),
            "posts": len(posts),
            "posted_again_after_503": again,
        }
    finally:
        for proc in procs:
            stop_process(proc)


async def main(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cloud-app-") as tmp:
        for way in args.ways:
            results.append(await measure(way, args, Path(tmp)))
    if args.json:
        print(json.dumps({"results": results}))
    else:
        for r in results:
            print(r)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=400)
    parser.add_argument("--messages", type=int, default=25, help="per number per delivery")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ways", nargs="+", default=["per_number", "app", "app_two_daemons"])
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args(sys.argv[1:]))
