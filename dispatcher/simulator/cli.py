"""Standalone simulator: ``python -m dispatcher.simulator`` (and ``wadispatch simulate``).

Prints one plain line on stdout once listening (``... listening on http://HOST:PORT``)
so scripts can read the port when binding ``:0``; logs are the project's
structlog JSON lines (``dispatcher.core.logs``).
"""

from __future__ import annotations

import argparse
import signal
from functools import partial

import msgspec
import structlog
import trio

from dispatcher.core import logs
from dispatcher.simulator.config import DEFAULT_INVALID_PREFIX, SimNumber
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.server import serve

log = structlog.get_logger(__name__)

DEFAULT_NUMBER = "+15550000001:secret"


async def run_standalone(
    host: str,
    port: int,
    numbers: list[SimNumber],
    *,
    status_delays: tuple[float, float, float] | None = (0.0, 0.05, 0.1),
    webhook_batch: int = 1,
    webhook_concurrency: int = 4,
    invalid_prefix: str = DEFAULT_INVALID_PREFIX,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a simulator for ``numbers`` with its webhook sender and HTTP server until cancelled.

    ``task_status.started(url)`` gets the server's base URL (the real port when ``port=0``).
    """
    sim = Simulator(
        numbers,
        status_delays=status_delays,
        webhook_batch=webhook_batch,
        webhook_concurrency=webhook_concurrency,
        invalid_prefix=invalid_prefix,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        url: str = await nursery.start(partial(serve, sim, host, port))
        log.info("sim.started", url=url, numbers=sim.numbers())
        task_status.started(url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wadispatch simulate",
        description="Fake WhatsApp Business On-Premises API, for tests and benches.",
    )
    parser.add_argument("--listen", default="127.0.0.1:9090", help="HOST:PORT (port 0: any free port)")
    parser.add_argument(
        "--number",
        action="append",
        metavar="+E164:PASSWORD",
        help=f"a number to serve and its admin password; repeatable (default {DEFAULT_NUMBER})",
    )
    parser.add_argument("--username", default="admin")
    parser.add_argument("--webhook-url", default=None, help="where every number posts its webhooks")
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s per number before 429")
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--webhook-batch", type=int, default=1, help="most statuses per webhook POST")
    parser.add_argument("--webhook-concurrency", type=int, default=4)
    parser.add_argument(
        "--status-delays",
        default="0,0.05,0.1",
        help='seconds to the sent,delivered,read webhooks, or "off"',
    )
    parser.add_argument("--invalid-prefix", default=DEFAULT_INVALID_PREFIX)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGINT/SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        host, _, port_text = args.listen.rpartition(":")
        port = int(port_text)
        numbers = [
            _parse_number(spec, args.username, args.webhook_url, args.rate, args.burst)
            for spec in (args.number or [DEFAULT_NUMBER])
        ]
        delays = _parse_delays(args.status_delays)
    except ValueError as exc:
        parser.error(str(exc))
    logs.configure(args.log_level)

    async def _main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                partial(
                    run_standalone,
                    host.strip("[]"),
                    port,
                    numbers,
                    status_delays=delays,
                    webhook_batch=args.webhook_batch,
                    webhook_concurrency=args.webhook_concurrency,
                    invalid_prefix=args.invalid_prefix,
                )
            )
            print(f"wadispatch simulator listening on {url}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("sim.stopping", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    trio.run(_main)
    return 0


def _parse_number(spec: str, username: str, webhook_url: str | None, rate: float, burst: int) -> SimNumber:
    number, sep, password = spec.partition(":")
    if not sep or not password:
        raise ValueError(f"--number wants +E164:PASSWORD, got {spec!r}")
    raw = {
        "number": number,
        "password": password,
        "username": username,
        "webhook_url": webhook_url,
        "rate": rate,
        "burst": burst,
    }
    try:
        return msgspec.convert(raw, SimNumber)
    except msgspec.ValidationError as exc:
        raise ValueError(f"--number {spec!r}: {exc}") from exc


def _parse_delays(text: str) -> tuple[float, float, float] | None:
    if text == "off":
        return None
    parts = [float(part) for part in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f'--status-delays wants three seconds "a,b,c" or "off", got {text!r}')
    return parts[0], parts[1], parts[2]
