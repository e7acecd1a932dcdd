"""End to end: load generator -> front door -> LMDB -> actors -> simulator, in separate processes.

The simulator runs as its own process (``wadispatch simulate``, numbers added
through its control API, status webhooks batched and aimed at the daemon), and
the daemon as ``wadispatch run`` in another, with a generated config: N numbers
whose rate limits are set out of reach (this measures the pipeline, not the
WhatsApp limit). ``--embedded-sim`` runs the simulator inside the daemon
instead (the daemon's CPU figure then includes it). This process posts M messages through the
Twilio-compatible front door over keep-alive connections (H11Pool), then polls
the simulator's counters until every message reached it.

Usage::

    .venv/bin/python -m bench.e2e --numbers 3 --messages 3000 [--concurrency 32] [--json]
    .venv/bin/python -m bench.e2e --channel cloud --peer --numbers 6 --messages 60000 \
        --intake batch --status-batch 500 [--json]

``--channel cloud`` gives the daemon Cloud API numbers (throughput ``--rate``,
1000/s by default, the messaging tier unlimited, one recipient per message
because of the pair rate) on the simulator's Cloud mode, whose signed status
webhooks come batched by ``--status-batch``. ``--peer`` first runs bench.peer
(pywa straight at the same simulator, through a number of its own) while the
daemon is up and idle, and adds ``peer_sent_per_s`` and ``ratio_vs_peer``
(delivered_per_s / peer_sent_per_s) to the JSON line. Meta caps each number
(``channel_cap_per_s`` is that cap over all the numbers): with 3 numbers at
1000/s, delivered_per_s measures the cap, not the daemon.

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import trio

from actors.http.pool import H11Pool
from bench import cloud, spec_channels
from bench._harness import (
    BATCH_PATH,
    batch_bodies,
    cpu_seconds,
    create_bodies,
    create_path,
    free_port,
    front_headers,
    number_digits,
    register_cloud_numbers,
    register_numbers,
    register_spec_numbers,
    rss_mb,
    sim_counts,
    start_daemon,
    start_simulator,
    stop_process,
    wait_ready,
    write_config,
)
from bench.floor import Server, server_case
from bench.progress import Bars, bars


async def drive(
    args: argparse.Namespace, url: str, sim_url: str, pid: int, sim_pid: int | None
) -> dict[str, object]:
    if args.intake == "batch":
        headers = [front_headers()[0], (b"content-type", b"application/json")]
        path, created = BATCH_PATH, 200
        requests = batch_bodies(args.numbers, args.messages, args.batch_size, args.channel)
    else:
        headers, path, created = front_headers(), create_path(), 201
        requests = [(body, 1) for body in create_bodies(args.numbers, args.messages, args.channel)]
    sent_before = [0]
    for _, count in requests:
        sent_before.append(sent_before[-1] + count)
    front = H11Pool(url, max_connections=args.concurrency, request_timeout=30.0)
    sim = H11Pool(sim_url, max_connections=1)
    latencies: list[float] = []
    errors = 0
    next_index = 0
    stalled = 0  # paced requests that went out late because every worker was still waiting

    start_at = trio.current_time()

    async def worker() -> None:
        nonlocal next_index, errors, stalled
        free_at = start_at
        while next_index < len(requests):
            index = next_index
            body, count = requests[index]
            next_index += 1
            held = 0.0
            if args.accept_rate:
                # Open loop: a request is due when the messages before it are, at the given
                # rate, whether or not earlier requests returned.
                due = start_at + sent_before[index] / args.accept_rate
                await trio.sleep_until(due)
                # No coordinated omission: if no worker was free when it was due (the daemon
                # stalled), the wait counts. The timer's own lateness does not: it is this
                # process's, not the daemon's.
                held = max(0.0, free_at - due)
                stalled += held > 0
            t0 = time.perf_counter()
            resp = await front.request(b"POST", path, headers, body)
            latencies.append(time.perf_counter() - t0 + held)
            free_at = trio.current_time()
            if resp.status != created:
                errors += count
            elif count > 1 or args.intake == "batch":
                errors += count - json.loads(resp.body)["accepted"]

    async def show_accepted(bar: Bars) -> None:
        while True:
            bar.update("accepted", len(latencies))
            await trio.sleep(0.2)

    cpu0 = cpu_seconds(pid)
    sim_cpu0 = cpu_seconds(sim_pid) if sim_pid else 0.0
    t0 = time.perf_counter()
    delivered = rejected_429 = 0
    with bars(args.messages, "accepted", "delivered") as bar:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show_accepted, bar)
            async with trio.open_nursery() as workers:
                for _ in range(args.concurrency):
                    workers.start_soon(worker)
            nursery.cancel_scope.cancel()
        bar.update("accepted", len(latencies))
        accepted_s = time.perf_counter() - t0
        intake_cpu = cpu_seconds(pid) - cpu0
        with trio.move_on_after(0 if args.intake_only else args.timeout):
            while delivered < args.messages - errors:
                delivered, rejected_429 = await (
                    cloud.sim_counts(sim, args.numbers)
                    if args.channel in ("cloud", "cloud-spec")
                    else sim_counts(sim)
                )
                bar.update("delivered", delivered)
                await trio.sleep(0.02)
    delivered_s = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    sim_cpu = cpu_seconds(sim_pid) - sim_cpu0 if sim_pid else None
    await front.aclose()
    await sim.aclose()
    lat = sorted(latencies)
    accepted = args.messages - errors
    if args.intake_only:
        return {
            "numbers": args.numbers,
            "messages": args.messages,
            "concurrency": args.concurrency,
            "intake": args.intake,
            "batch_size": args.batch_size if args.intake == "batch" else 1,
            "accept_rate": args.accept_rate,
            "accepted_per_s": round(accepted / accepted_s, 1),
            "accept_p50_ms": round(statistics.median(lat) * 1000, 2),
            "accept_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
            "stalled_starts": stalled,
            "errors": errors,
            "creates_per_daemon_cpu_s": round(accepted / intake_cpu) if intake_cpu > 0 else 0,
            "daemon_rss_mb": round(rss_mb(pid), 1),
        }
    return {
        "channel": args.channel,
        "numbers": args.numbers,
        "messages": args.messages,
        "concurrency": args.concurrency,
        "intake": args.intake,
        "batch_size": args.batch_size if args.intake == "batch" else 1,
        "status_batch": args.webhook_batch,
        "accepted_per_s": round((args.messages - errors) / accepted_s, 1),
        "delivered_per_s": round(delivered / delivered_s, 1),
        "accept_p50_ms": round(statistics.median(lat) * 1000, 2),
        "accept_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
        "errors": errors,
        "lost": args.messages - errors - delivered,
        "sim_429": rejected_429,
        # Cloud: Meta's throughput over all the numbers, the most delivered_per_s can be after the burst.
        "channel_cap_per_s": args.rate * args.numbers if args.channel in ("cloud", "cloud-spec") else None,
        "simulator": "embedded" if sim_pid is None else "process",
        "daemon_cpu_s_per_1k": round(cpu / args.messages * 1000, 3),
        "daemon_msgs_per_cpu_s": round(args.messages / cpu) if cpu > 0 else 0,
        "sim_cpu_s_per_1k": None if sim_cpu is None else round(sim_cpu / args.messages * 1000, 3),
        "daemon_rss_mb": round(rss_mb(pid), 1),
    }


def peer_results(peer: dict[str, Any], delivered_per_s: float) -> dict[str, object]:
    """The peer's figures for the final line, and wadispatch's delivered rate over its best."""
    best = float(peer["sent_per_s"])
    return {
        "peer_sent_per_s": best,
        "peer_best_inflight": peer["best_inflight"],
        "peer_levels": {str(level["inflight"]): level["sent_per_s"] for level in peer["levels"]},
        "peer_errors": peer["errors"],
        "ratio_vs_peer": round(delivered_per_s / best, 2) if best > 0 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=3)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--channel",
        choices=("onprem", "cloud", *spec_channels.KINDS),
        default="onprem",
        help="the numbers' channel: On-Prem, the Cloud API (simulator in its Cloud mode), or a spec "
        "channel: line, sms (the Vonage spec), cloud-spec (the whatsapp-cloud spec on the Cloud mode)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="per-number limit (default: out of reach on-prem; 1000/s, Meta's highest, on Cloud)",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="Cloud: also run bench.peer (pywa) against the same simulator, for ratio_vs_peer",
    )
    parser.add_argument("--peer-messages", type=int, default=2000, help="peer sends per concurrency level")
    parser.add_argument("--peer-sweep", default="1,4,16,64", help="peer in-flight levels")
    parser.add_argument(
        "--intake",
        choices=("single", "batch"),
        default="single",
        help="Twilio-form creates, one message each, or POST /v1/messages:batch arrays",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="messages per batch request (max 1000)")
    parser.add_argument(
        "--status-batch",
        "--webhook-batch",
        dest="webhook_batch",
        type=int,
        default=50,
        help="statuses per simulator webhook POST",
    )
    parser.add_argument("--max-in-flight", type=int, default=64, help="sends in flight per number")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--intake-only",
        action="store_true",
        help="measure the front door alone: numbers paced to 1 msg/min, no wait for delivery",
    )
    parser.add_argument(
        "--accept-rate",
        type=float,
        default=0.0,
        help="pace creates open-loop at this many per second (default: as fast as answered); "
        "a request's latency includes any wait for a free worker past its due time",
    )
    parser.add_argument(
        "--quart-floor",
        action="store_true",
        help="also measure the hello-world quart-trio floor (bench.floor) in this run, for the ratio",
    )
    parser.add_argument(
        "--embedded-sim",
        action="store_true",
        help="run the simulator inside the daemon (default: its own process, measured apart)",
    )
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    if args.rate is None:
        args.rate = cloud.MAX_THROUGHPUT if args.channel in ("cloud", "cloud-spec") else 100_000.0
    if args.channel in ("cloud", "cloud-spec") and args.rate > cloud.MAX_THROUGHPUT:
        parser.error(f"--rate: a Cloud number's throughput is at most {cloud.MAX_THROUGHPUT:g}/s")
    if args.peer and (args.channel != "cloud" or args.intake_only or args.peer_messages < 1):
        parser.error("--peer needs --channel cloud, delivery (not --intake-only) and --peer-messages >= 1")
    if (
        args.numbers < 1
        or args.messages < 1
        or args.concurrency < 1
        or args.max_in_flight < 1
        or args.rate <= 0
        or args.accept_rate < 0
    ):
        parser.error(
            "--numbers, --messages, --concurrency and --max-in-flight must be >= 1, --rate > 0, "
            "--accept-rate >= 0"
        )
    if not 1 <= args.batch_size <= 1000 or not 1 <= args.webhook_batch <= 1000:
        parser.error("--batch-size and --status-batch must be in 1..1000")
    if args.intake_only:
        args.rate = 1 / 60
    burst = max(1, int(args.rate))
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-") as tmp:
        port, sim_port = free_port(), free_port()
        url, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
        cfg = write_config(
            Path(tmp) / "data",
            port,
            sim_port,
            args.numbers,
            args.rate,
            args.webhook_batch,
            burst=burst,
            embedded=args.embedded_sim,
            channel=args.channel,
            max_in_flight=args.max_in_flight,
        )
        sim_proc = (
            None
            if args.embedded_sim
            else start_simulator(sim_port, "--webhook-batch", str(args.webhook_batch))
        )
        proc = None
        try:
            if sim_proc is not None and args.channel == "cloud":
                numbers = [
                    cloud.sim_number(
                        i, number_digits(i), f"{url}/webhooks/cloud/{number_digits(i)}", args.rate, burst
                    )
                    for i in range(args.numbers)
                ]
                trio.run(register_cloud_numbers, sim_url, numbers)
            elif sim_proc is not None and args.channel in spec_channels.KINDS:
                digits = [number_digits(i) for i in range(args.numbers)]
                trio.run(register_spec_numbers, sim_url, args.channel, url, digits, args.rate, burst)
            elif sim_proc is not None:
                trio.run(register_numbers, sim_url, port, args.numbers, args.rate, burst)
            proc = start_daemon(cfg)
            trio.run(wait_ready, url)
            peer = None
            if args.peer:  # the daemon is up and idle: same simulator, same machine state
                peer_number = cloud.peer_number(args.rate * args.numbers, burst * args.numbers)
                trio.run(register_cloud_numbers, sim_url, [peer_number])
                peer = cloud.run_peer(sim_url, args.peer_messages, args.peer_sweep)
            sim_pid = None if sim_proc is None else sim_proc.pid
            result = trio.run(drive, args, url, sim_url, proc.pid, sim_pid)
            if peer is not None:
                result.update(peer_results(peer, cast(float, result["delivered_per_s"])))
        finally:
            if proc is not None:
                stop_process(proc)
            if sim_proc is not None:
                stop_process(sim_proc)
    if args.quart_floor:
        with Server("quart") as server:
            floor = trio.run(server_case, server, 2.0)
        result["quart_floor_per_cpu_s"] = floor["per_cpu_s"]
        per_cpu = result.get("creates_per_daemon_cpu_s") or result.get("daemon_msgs_per_cpu_s")
        result["over_quart_floor"] = round(float(per_cpu) / floor["per_cpu_s"], 2)  # type: ignore[arg-type]
    for key, value in result.items():
        sys.stderr.write(f"{key:>22}: {value}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result.get("lost", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
