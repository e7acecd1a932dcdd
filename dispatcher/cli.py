"""``wadispatch``: run | check-config | simulate | send, and the admin commands (see admincli)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

import msgspec
import trio

from dispatcher import admincli
from dispatcher import config as configuration
from dispatcher.core import logs
from dispatcher.core.dataroot import DataRootError, open_root
from dispatcher.service import runtime, workers

DEFAULT_CONFIG = "conf/dispatcher.toml"
SANDBOX_ACCOUNT = "AC00000000000000000000000000000001"
SANDBOX_TOKEN = "sandbox-auth-token"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wadispatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config (default: %(default)s)")
    run.add_argument("--data-dir", help="override store.data_dir")
    run.add_argument("--listen", help="override server.listen (HOST:PORT)")
    run.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes sharing the listen port and the buckets (flock), one a core (default: %(default)s)",
    )
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --workers

    rebucket = sub.add_parser(
        "rebucket", help="copy the data root into another number of buckets (offline: no daemon may run)"
    )
    rebucket.add_argument("--buckets", type=int, required=True, help="the new bucket count (a power of two)")
    rebucket.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config (default: %(default)s)")
    rebucket.add_argument("--data-dir", help="override store.data_dir")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path")

    sim = sub.add_parser("simulate", help="run the WhatsApp On-Premises API simulator alone")
    sim.add_argument("args", nargs=argparse.REMAINDER, help="simulator options (see: simulate --help)")

    send = sub.add_parser("send", help="send a WhatsApp message through a running daemon")
    send.add_argument("--to", required=True, help="recipient, e.g. whatsapp:+15551234567")
    send.add_argument("--from", dest="from_", default="whatsapp:+15550000001")
    send.add_argument("--body", required=True)
    send.add_argument("--url", default="http://127.0.0.1:8080")
    send.add_argument("--account", default=os.environ.get("WADISPATCH_ACCOUNT_SID", SANDBOX_ACCOUNT))
    send.add_argument("--token", default=os.environ.get("WADISPATCH_AUTH_TOKEN", SANDBOX_TOKEN))
    admincli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # the simulator parses its own options (and --help)
        from dispatcher.simulator.cli import main as simulate

        return int(simulate(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.path)
    if args.command == "run":
        return _run(args)
    if args.command == "send":
        return _send(args)
    if args.command == "rebucket":
        return _rebucket(args)
    if args.command in admincli.COMMANDS:
        return admincli.run(args)
    raise AssertionError(args.command)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _check_config(path: str) -> int:
    try:
        cfg = configuration.load(path)
    except configuration.ConfigError as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 2
    cluster = cfg.cluster
    where = ""
    if cluster is not None:
        where = (
            f", cluster: etcd {cluster.name!r} via {len(cluster.etcd.endpoints)} endpoints"
            if cluster.backend == "etcd"
            else ", cluster: flock on the data root"
        )
    sys.stdout.write(f"{path}: ok ({len(cfg.accounts)} accounts, {len(cfg.numbers)} numbers{where})\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    from dispatcher.core.store import StoreError
    from dispatcher.service.daemon import run_daemon

    def load() -> configuration.Config:
        """The config file with the command line's overrides (also on every live reload)."""
        cfg = configuration.load(args.config)
        overrides: dict[str, object] = {}
        if args.listen:
            configuration.parse_listen(args.listen, "--listen")
            overrides["server"] = msgspec.structs.replace(cfg.server, listen=args.listen)
        if args.data_dir:
            overrides["store"] = msgspec.structs.replace(cfg.store, data_dir=args.data_dir)
        if (args.worker or args.workers > 1) and cfg.cluster is None:
            overrides["cluster"] = configuration.ClusterConfig()  # processes of one host: flock
        return msgspec.structs.replace(cfg, **overrides)

    try:
        cfg = load()
        if args.workers > 1:
            configuration.check_workers(cfg, args.workers)
    except configuration.ConfigError as exc:
        sys.stderr.write(f"wadispatch: config error: {exc}\n")
        return 2
    logs.configure(cfg.log.level)
    if args.workers > 1:
        try:  # created once here: N workers creating one new root at once would race
            open_root(cfg.store.data_dir, cfg.store.buckets)
        except DataRootError as exc:
            sys.stderr.write(f"wadispatch: storage error: {exc}\n")
            return 3
        return workers.run_pool(_run_args(args), args.workers)

    def ready() -> None:
        runtime.settle()
        workers.report_ready()

    runtime.tune()
    try:
        trio.run(lambda: run_daemon(cfg, reload_config=load, on_ready=ready, shared_port=args.worker))
    except StoreError as exc:
        sys.stderr.write(f"wadispatch: storage error: {exc}\n")
        return 3
    except OSError as exc:
        sys.stderr.write(f"wadispatch: cannot start: {exc}\n")
        return 4
    return 0


def _rebucket(args: argparse.Namespace) -> int:
    from dispatcher.core.dataroot import DataRootError
    from dispatcher.ops.rebucket import rebucket

    try:
        cfg = configuration.load(args.config)
    except configuration.ConfigError as exc:
        sys.stderr.write(f"wadispatch: config error: {exc}\n")
        return 2
    data_dir = args.data_dir or cfg.store.data_dir
    try:
        report = rebucket(data_dir, args.buckets, map_size=cfg.store.map_size_mb << 20)
    except DataRootError as exc:
        sys.stderr.write(f"wadispatch rebucket: refused: {exc}\n")
        return 3
    copied = ", ".join(f"{name} {count}" for name, count in sorted(report.copied.items()))
    sys.stdout.write(
        f"{data_dir}: {report.old_count} -> {report.new_count} buckets ({copied}; per bucket "
        f"{report.per_bucket}).\nThe old root is kept as {report.moved_to}: remove it once the daemon "
        f"runs well. Set [store] buckets = {report.new_count} (or leave it unset) before starting.\n"
    )
    if report.dropped:
        sys.stdout.write(f"Index entries of messages that no longer exist, not copied: {report.dropped}\n")
    return 0


def _run_args(args: argparse.Namespace) -> list[str]:
    """The options of ``run`` each worker of ``--workers`` gets."""
    out = ["--config", args.config]
    if args.data_dir:
        out += ["--data-dir", args.data_dir]
    if args.listen:
        out += ["--listen", args.listen]
    return out


def _send(args: argparse.Namespace) -> int:
    data = urllib.parse.urlencode({"To": args.to, "From": args.from_, "Body": args.body}).encode()
    url = f"{args.url.rstrip('/')}/2010-04-01/Accounts/{args.account}/Messages.json"
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header(
        "Authorization", "Basic " + base64.b64encode(f"{args.account}:{args.token}".encode()).decode()
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            sys.stdout.write(json.dumps(json.loads(resp.read()), indent=2) + "\n")
            return 0
    except urllib.error.HTTPError as exc:
        sys.stderr.write(exc.read().decode(errors="replace") + "\n")
        return 1
    except urllib.error.URLError as exc:
        sys.stderr.write(f"wadispatch: cannot reach {args.url}: {exc.reason}\n")
        return 1
