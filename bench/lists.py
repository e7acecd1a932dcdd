"""A message list across hosts that share no data root: a page gathered from three daemons vs read whole.

``python -m bench.lists`` (loopback only, everything started here and stopped by PID, about a
minute) creates ``--messages`` messages from ``--numbers`` senders on a data root of 8 buckets,
then walks ``--pages`` pages of 50 (each by the previous page's ``next_page_uri``, as the Twilio
SDK does), ``--walks`` times, timing each page:

1. ``local``: one daemon holding every bucket (no ``[cluster]``): each page is one merge of
   the 8 buckets' walks, in process;
2. ``gathered`` (when ``etcd`` is installed): 3 daemons through a 3-member etcd, each on a data
   root of its own, the creates spread over them (each stored by its sender's owner); pages asked
   of one daemon, which reads its buckets and asks the two others for theirs over the peer pool.

Prints one JSON line: ``local_page_ms`` and ``gathered_page_ms`` (p50, p90, max), and the pages'
message counts (every message is listed, in both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import trio

from actors.http.pool import H11Pool
from bench._harness import free_port, post_creates, wait_ready
from bench.cluster import TTL, Daemon, front_headers, number, start_simulator, stop, write_config
from tests.helpers.etcd import ETCD, EtcdCluster, cluster_section
from tests.helpers.processes import ACCOUNT

BUCKETS = 8
LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()


def bodies(messages: int, numbers: int) -> list[bytes]:
    return [
        urllib.parse.urlencode(
            {"From": f"whatsapp:{number(i % numbers)}", "To": "whatsapp:+15557770000", "Body": f"list {i}"}
        ).encode()
        for i in range(messages)
    ]


async def walk(url: str, pages: int, walks: int) -> tuple[list[float], list[str]]:
    """Seconds per page over ``walks`` walks of ``pages`` pages; the sids of the last walk."""
    pool = H11Pool(url, max_connections=1)
    took: list[float] = []
    sids: list[str] = []
    try:
        for _ in range(walks):
            sids = []
            target: bytes | None = LIST + b"?PageSize=50"
            for _ in range(pages):
                if target is None:
                    break
                start = time.perf_counter()
                resp = await pool.request(b"GET", target, front_headers()[:1], b"")
                took.append(time.perf_counter() - start)
                if resp.status != 200:
                    raise SystemExit(f"list refused: {resp.status} {resp.body[:300]!r}")
                page = json.loads(resp.body)
                sids += [m["sid"] for m in page["messages"]]
                nxt = page["next_page_uri"]
                target = None if nxt is None else nxt.encode()
    finally:
        await pool.aclose()
    return took, sids


def figures(took: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in took)
    return {
        "p50": round(statistics.median(ms), 2),
        "p90": round(ms[int(len(ms) * 0.9)], 2),
        "max": round(ms[-1], 2),
    }


async def local(work: Path, args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    sim_port, port = free_port(), free_port()
    sim = start_simulator(sim_port, args.numbers)
    daemon = Daemon("local", port, work / "local.log")
    try:
        cfg = write_config(work / "local.toml", work / "local", port, sim_port, args.numbers, buckets=BUCKETS)
        daemon.start(cfg)
        await wait_ready(daemon.url)
        await post_creates(daemon.url, front_headers(), bodies(args.messages, args.numbers), 16)
        took, sids = await walk(daemon.url, args.pages, args.walks)
        return figures(took), sids
    finally:
        if daemon.proc is not None:
            stop(daemon.proc)
        stop(sim)


async def gathered(work: Path, args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    cluster = EtcdCluster(work / "etcd")
    sim_port = free_port()
    sim = start_simulator(sim_port, args.numbers)
    daemons = [Daemon(f"g{i}", free_port(), work / f"g{i}.log") for i in range(3)]
    try:
        cluster.start()
        for d in daemons:
            cfg = write_config(
                work / f"{d.name}.toml",
                work / f"root-{d.name}",  # a data root of its own: nothing shared but etcd
                d.port,
                sim_port,
                args.numbers,
                buckets=BUCKETS,
                cluster=cluster_section(cluster.endpoints, name="lists", ttl=TTL, grace=1.0, owner_id=d.name),
            )
            d.start(cfg)
        for d in daemons:
            await wait_ready(d.url)
        await trio.sleep(2 * TTL)  # claims settle to the fair share
        every = bodies(args.messages, args.numbers)
        async with trio.open_nursery() as nursery:
            for i, d in enumerate(daemons):
                nursery.start_soon(post_creates, d.url, front_headers(), every[i::3], 8)
        took, sids = await walk(daemons[0].url, args.pages, args.walks)
        return figures(took), sids
    finally:
        for d in daemons:
            if d.proc is not None:
                stop(d.proc)
        stop(sim)
        cluster.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"messages": args.messages, "pages": args.pages, "walks": args.walks}
        result["local_page_ms"], local_sids = await local(work, args)
        result["listed"] = len(local_sids)
        if ETCD is not None:
            result["gathered_page_ms"], gathered_sids = await gathered(work, args)
            result["gathered_listed"] = len(gathered_sids)
        return result


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lists", description=__doc__.split("\n")[0])
    parser.add_argument("--numbers", type=int, default=8)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--walks", type=int, default=3)
    args = parser.parse_args(argv)
    result = trio.run(main, args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    cli()
