"""``wadispatch status | outbox | pause | resume | drain | token refresh | templates | reload``
(and ``numbers`` / ``doctor``: ``numbers_cli``).

``templates``: ``sync`` (pull every WABA's templates from Meta now), ``list`` (the WABAs'
templates with status, category, quality and the variables a send takes, then the file
templates), ``show SID|NAME``, ``submit FILE --waba ID`` (a template as Graph's create takes
it, for Meta's review), ``delete NAME --waba ID``, ``add FILE`` (a file-style template).

The operator's side of the admin API (``/admin/v1``): human-readable tables by
default, ``--json`` for scripts (the server's JSON, unchanged). The admin token
comes from ``--admin-token-file``, ``$WADISPATCH_ADMIN_TOKEN`` or
``--admin-token`` (the last shows in ``ps``: avoid it on shared hosts).

Exit codes: 0 done, 1 the daemon refused (its message on stderr), 2 bad usage
or no token, 3 the daemon cannot be reached, 4 a drain timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dispatcher import numbers_cli
from dispatcher.messages.template_views import SyncOutcome, TemplateDetail, TemplateSummary
from dispatcher.ops.cluster import ClusterStatus
from dispatcher.ops.operations import Ack, NumberStatus, Outbox, ReloadResult, Status, TokenRefreshed

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
COMMANDS = (
    "status",
    "outbox",
    "pause",
    "resume",
    "drain",
    "token",
    "templates",
    "reload",
    *numbers_cli.COMMANDS,
)


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("WADISPATCH_URL", DEFAULT_URL),
        help="daemon URL (default: %(default)s)",
    )
    common.add_argument("--admin-token-file", help="file holding the [admin] token")
    common.add_argument("--admin-token", help="the [admin] token (default: $WADISPATCH_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the JSON answer instead of a table")
    common.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")

    status = sub.add_parser(
        "status", parents=[common], help="numbers, state, outbox depth, rate, token expiry"
    )
    status.add_argument(
        "--cluster", action="store_true", help="every daemon owning buckets: what it owns, and its numbers"
    )
    outbox = sub.add_parser("outbox", parents=[common], help="a number's pending messages, oldest first")
    outbox.add_argument("number")
    outbox.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("pause", "stop sending (messages are still accepted)"),
        ("resume", "undo pause or drain"),
    ):
        sub.add_parser(name, parents=[common], help=text).add_argument("number")
    drain = sub.add_parser("drain", parents=[common], help="refuse new messages and send the outbox empty")
    drain.add_argument("number")
    drain.add_argument("--no-wait", action="store_true", help="start the drain and return")
    drain.add_argument(
        "--wait-timeout", type=float, default=0.0, help="give up waiting after S seconds (0: never)"
    )
    drain.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    # Group parsers take no options: a sub-parser's defaults would overwrite the group's.
    token = sub.add_parser("token", help="API token of a number")
    token_sub = token.add_subparsers(dest="action", required=True)
    token_sub.add_parser("refresh", parents=[common], help="log in again now").add_argument("number")
    templates = sub.add_parser("templates", help="message templates")
    templates_sub = templates.add_subparsers(dest="action", required=True)
    sync = templates_sub.add_parser("sync", parents=[common], help="pull the WABAs' templates from Meta now")
    sync.add_argument("--waba", help="only this WABA")
    listing = templates_sub.add_parser(
        "list", parents=[common], help="the WABAs' templates and the file ones"
    )
    listing.add_argument("--waba", help="only this WABA's")
    listing.add_argument("--status", help="only those in this status (APPROVED, PAUSED...)")
    show = templates_sub.add_parser(
        "show", parents=[common], help="one template: status, variables, components"
    )
    show.add_argument("template", help="its ContentSid (HX...) or its name")
    show.add_argument("--language", help="the language, when the name has several")
    submit = templates_sub.add_parser("submit", parents=[common], help="submit a template to Meta for review")
    submit.add_argument(
        "file", help="the template as Graph's create takes it, JSON ('-' reads standard input)"
    )
    submit.add_argument("--waba", required=True, help="the WABA it is for")
    delete = templates_sub.add_parser("delete", parents=[common], help="delete a template at Meta")
    delete.add_argument("name")
    delete.add_argument("--waba", required=True)
    delete.add_argument("--language", help="only this language (default: all)")
    add = templates_sub.add_parser("add", parents=[common], help="register a file-style template from JSON")
    add.add_argument("file", help="JSON template definition ('-' reads standard input)")
    sub.add_parser("reload", parents=[common], help="re-read the config and apply it (like SIGHUP)")
    numbers_cli.add_parsers(sub, common)


def run(args: argparse.Namespace) -> int:
    # Piped (grep, less, a log): wide enough that a table never wraps a number or sid.
    out = Console(file=sys.stdout, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
    try:
        client = _Client(args)
        with client:
            return _dispatch(args, client, out)
    except (CliError, numbers_cli.CommandFailed) as exc:
        sys.stderr.write(f"wadispatch: {exc}\n")
        return exc.code


def _dispatch(args: argparse.Namespace, client: _Client, out: Console) -> int:
    command = args.command
    if command in numbers_cli.COMMANDS:
        return numbers_cli.run(args, client, out)
    if command == "status" and args.cluster:
        cluster = client.get("/cluster", ClusterStatus)
        return _emit(args, out, cluster, lambda: _cluster_view(cluster))
    if command == "status":
        status = client.get("/status", Status)
        return _emit(args, out, status, lambda: _status_table(status))
    if command == "outbox":
        box = client.get(f"/numbers/{_path(args.number)}/outbox?limit={args.limit}", Outbox)
        return _emit(args, out, box, lambda: _outbox_table(box))
    if command in ("pause", "resume"):
        ack = client.post(f"/numbers/{_path(args.number)}/{command}", Ack)
        return _emit(args, out, ack, lambda: f"{ack.number}: {ack.state} ({ack.outbox} in the outbox)")
    if command == "drain":
        return _drain(args, client, out)
    if command == "token":
        done = client.post(f"/numbers/{_path(args.number)}/token/refresh", TokenRefreshed)
        return _emit(
            args, out, done, lambda: f"{done.number}: new token, expires in {_duration(done.expires_in)}"
        )
    if command == "reload":
        result = client.post("/reload", ReloadResult, accept=(200, 422))
        _emit(args, out, result, lambda: _reload_text(result))
        return 0 if result.ok else 1
    if command == "templates":
        return _templates(args, client, out)
    raise AssertionError(command)


def _templates(args: argparse.Namespace, client: _Client, out: Console) -> int:
    action = args.action
    if action == "sync":
        query = f"?waba={_waba(args.waba)}" if args.waba else ""
        synced = client.post(f"/wabas/sync{query}", SyncAnswer)
        _emit(args, out, synced, lambda: _sync_table(synced))
        return 1 if any(s.error for s in synced.synced) else 0
    if action == "list":
        params = [f"{k}={v}" for k, v in (("waba", args.waba), ("status", args.status)) if v]
        query = "?" + "&".join(params) if params else ""
        synced_list = client.get(f"/wabas/templates{query}", TemplateList)
        files = client.get("/templates", dict[str, list[dict[str, object]]])
        both = {"templates": files["templates"], "synced": synced_list.templates}
        return _emit(args, out, both, lambda: _templates_view(synced_list.templates, files["templates"]))
    if action == "show":
        query = f"?language={args.language}" if args.language else ""
        shown = client.get(f"/wabas/templates/{_segment(args.template)}{query}", TemplateDetail)
        return _emit(args, out, shown, lambda: _template_detail(shown))
    if action == "submit":
        body = _read_json(args.file)
        made = client.post(f"/wabas/{_waba(args.waba)}/templates", TemplateDetail, body=body, accept=(201,))
        return _emit(
            args, out, made, lambda: f"{made.name} ({made.language}) submitted: {made.status}, {made.sid}"
        )
    if action == "delete":
        query = f"?language={args.language}" if args.language else ""
        gone = client.delete(f"/wabas/{_waba(args.waba)}/templates/{_segment(args.name)}{query}", Deleted)
        return _emit(
            args, out, gone, lambda: f"deleted at Meta: {', '.join(gone.deleted) or 'nothing known here'}"
        )
    body = _read_json(args.file)
    created = client.post("/templates", object, body=body, accept=(200, 201))
    return _emit(args, out, created, lambda: "template added: " + json.dumps(created, sort_keys=True))


class TemplateList(msgspec.Struct):
    templates: list[TemplateSummary]


class SyncAnswer(msgspec.Struct):
    synced: list[SyncOutcome]


class Deleted(msgspec.Struct):
    deleted: list[str]


def _waba(waba: str) -> str:
    if not waba.isdigit():
        raise CliError(f"not a WABA id: {waba!r} (digits, as in [[wabas]] id)", 2)
    return waba


def _segment(value: str) -> str:
    """A template's sid or name as one path segment."""
    if not value or not all(c.isalnum() or c == "_" for c in value):
        raise CliError(f"not a template sid or name: {value!r}", 2)
    return value


def _sync_table(answer: SyncAnswer) -> Table:
    table = Table(title="templates synced from Meta")
    for col in ("waba", "fetched", "added", "changed", "removed", "error"):
        table.add_column(
            col, justify="right" if col in ("fetched", "added", "changed", "removed") else "left"
        )
    for s in answer.synced:
        table.add_row(
            s.waba, str(s.fetched), str(len(s.added)), str(len(s.changed)), str(len(s.removed)), s.error or ""
        )
    return table


def _templates_view(synced: list[TemplateSummary], files: list[dict[str, object]]) -> Group:
    table = Table(title=f"{len(synced)} templates of the WABAs")
    for col in ("sid", "waba", "name", "language", "status", "category", "format", "quality", "variables"):
        table.add_column(col, no_wrap=col in ("sid", "waba"))
    for t in synced:
        status = f"{t.status} ({t.status_reason})" if t.status_reason else t.status
        table.add_row(
            t.sid,
            t.waba,
            t.name,
            t.language,
            status,
            t.category,
            t.parameter_format,
            t.quality,
            ", ".join(t.variables),
        )
    parts: list[Table | str] = [table]
    if files:
        parts.append(_generic_table({"templates": files}))
    return Group(*parts)


def _template_detail(t: TemplateDetail) -> Group:
    table = Table(title=f"{t.name} ({t.language})", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("sid", t.sid),
        ("waba", t.waba),
        ("meta id", t.id),
        ("status", t.status + (f" ({t.status_reason})" if t.status_reason else "")),
        ("category", t.category + (f" (was {t.previous_category})" if t.previous_category else "")),
        ("parameter format", t.parameter_format),
        ("quality", t.quality),
        ("ContentVariables keys", ", ".join(t.variables) or "-"),
        ("synced", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.synced_at)) if t.synced_at else "-"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    components = json.dumps(msgspec.to_builtins(t.components), indent=2, ensure_ascii=False)
    return Group(table, components)


class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        token = _admin_token(args)
        base = args.url.rstrip("/") + "/admin/v1"
        self._http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout, trust_env=False
        )
        self._url = args.url

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def get(self, path: str, type: type[T]) -> T:
        return self._call("GET", path, type, None, (200,))

    def post(self, path: str, type: type[T], *, body: object = None, accept: tuple[int, ...] = (200,)) -> T:
        return self._call("POST", path, type, body, accept)

    def delete(self, path: str, type: type[T]) -> T:
        return self._call("DELETE", path, type, None, (200,))

    def call(self, method: str, path: str, body: object, accept: tuple[int, ...]) -> tuple[int, bytes]:
        """One admin call: its status (one of ``accept``, else CliError) and body."""
        try:
            resp = self._http.request(method, path, content=None if body is None else json.dumps(body))
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the daemon at {self._url}: {exc}", 3) from exc
        if resp.status_code not in accept:
            raise CliError(_error_text(resp), 1)
        return resp.status_code, resp.content

    def _call(self, method: str, path: str, type: type[T], body: object, accept: tuple[int, ...]) -> T:
        _, content = self.call(method, path, body, accept)
        try:
            return msgspec.json.decode(content, type=type)
        except msgspec.DecodeError as exc:
            raise CliError(f"unexpected answer from {self._url}{path}: {exc}", 1) from exc


def _admin_token(args: argparse.Namespace) -> str:
    if args.admin_token_file:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.admin_token_file}: {exc.strerror}", 2) from exc
    else:
        token = args.admin_token or os.environ.get("WADISPATCH_ADMIN_TOKEN", "")
    if not token:
        raise CliError("no admin token: use --admin-token-file or set WADISPATCH_ADMIN_TOKEN", 2)
    return token


def _error_text(resp: httpx.Response) -> str:
    try:
        message = resp.json().get("message") or resp.json().get("error")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {resp.status_code}: {message or resp.text.strip() or resp.reason_phrase}"


def _path(number: str) -> str:
    """A number as a path segment: digits only (a '+' is fine in a path, but not in every proxy)."""
    raw = number.strip().removeprefix("whatsapp:")
    digits = raw.removeprefix("+")
    if not digits.isdigit():
        raise CliError(f"not a phone number: {number!r} (expected +15550001111)", 2)
    return digits


def _read_json(name: str) -> object:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}", 2) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{name}: not valid JSON: {exc}", 2) from exc


def _emit(args: argparse.Namespace, out: Console, value: object, human: Any) -> int:
    if args.json:
        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    else:
        out.print(human())
    return 0


def _drain(args: argparse.Namespace, client: _Client, out: Console) -> int:
    number = _path(args.number)
    ack = client.post(f"/numbers/{number}/drain", Ack)
    if args.no_wait:
        return _emit(args, out, ack, lambda: f"{ack.number}: draining ({ack.outbox} in the outbox)")
    deadline = time.monotonic() + args.wait_timeout if args.wait_timeout > 0 else None
    total = max(ack.outbox, 1)
    left = ack.outbox
    err = Console(stderr=True)
    with Progress(
        TextColumn(f"draining {ack.number}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=args.json,
        transient=False,
    ) as bar:
        task = bar.add_task("drain", total=total, completed=total - left)
        while left > 0:
            if deadline is not None and time.monotonic() >= deadline:
                raise CliError(f"{ack.number}: still {left} in the outbox after {args.wait_timeout:g}s", 4)
            time.sleep(args.poll)
            left = client.get(f"/numbers/{number}/outbox?limit=1", Outbox).depth
            if left > total:  # accepted just before the drain began
                total = left
                bar.update(task, total=total)
            bar.update(task, completed=total - left)
    final = Ack(number=ack.number, state="draining", outbox=0)
    return _emit(args, out, final, lambda: f"{ack.number}: drained (outbox empty; new messages refused)")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "expired"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m {rest % 60}s"


def _cluster_view(cluster: ClusterStatus) -> Group:
    """One row per daemon, then each reachable daemon's numbers."""
    unowned = f", unowned: {_ranges(cluster.unowned)}" if cluster.unowned else ""
    table = Table(
        title=f"wadispatch cluster: {len(cluster.daemons)} daemons, {cluster.buckets} buckets{unowned}, "
        f"{cluster.numbers} numbers running"
    )
    for col in ("daemon", "address", "buckets", "numbers", "writes queued", "state"):
        table.add_column(col, justify="right" if col in ("numbers", "writes queued") else "left")
    parts: list[Table] = [table]
    for daemon in cluster.daemons:
        name = daemon.owner_id + (" (this one)" if daemon.here else "")
        status = daemon.status
        table.add_row(
            name,
            daemon.address,
            _ranges(daemon.buckets) or "-",
            "-" if status is None else str(len(status.numbers)),
            "-" if status is None else str(status.store_queued),
            "up" if daemon.reachable else f"unreachable: {daemon.error}",
        )
        if status is not None and status.numbers:
            numbers = _status_table(status)
            numbers.title = f"{daemon.owner_id}: {len(status.numbers)} numbers"
            parts.append(numbers)
    return Group(*parts)


def _ranges(buckets: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    out: list[str] = []
    for b in sorted(buckets):
        if out and out[-1].split("-")[-1] == str(b - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{b}"
        else:
            out.append(str(b))
    return ", ".join(out)


def _status_table(status: Status) -> Table:
    table = Table(title=f"wadispatch: {len(status.numbers)} numbers, {status.store_queued} writes queued")
    for col in ("number", "state", "outbox", "in flight", "rate/burst", "sent", "failed", "retries", "429s"):
        table.add_column(col, justify="left" if col in ("number", "state") else "right", no_wrap=True)
    table.add_column("restarts", justify="right")
    table.add_column("token expires", justify="right")
    table.add_column("tier (waits)", justify="right")
    table.add_column("parked", justify="right")
    table.add_column("at Meta")
    for n in status.numbers:
        storage = f"{n.unrecorded} unrecorded: {n.storage}" if n.storage is not None else None
        reason = n.degraded or storage or (n.last_error if n.state != "running" else None)
        state = f"{n.state} ({reason})" if reason else n.state
        table.add_row(
            n.number,
            state,
            str(n.outbox),
            str(n.in_flight),
            f"{n.rate:g}/s {n.burst}",
            str(n.sent),
            str(n.failed),
            str(n.retries),
            str(n.rate_limited),
            str(n.restarts),
            _duration(n.token_expires_in),
            "-" if n.tier_limit is None else f"{n.tier_used}/{n.tier_limit} ({n.tier_waits})",
            str(n.parked),
            _meta(n),
        )
    return table


def _meta(n: NumberStatus) -> str:
    """What Meta last said of a Cloud number: quality, tier, throughput, problems."""
    parts = [p for p in (n.quality, n.meta_tier, n.throughput_level) if p]
    if n.problems:
        parts.append(("PAUSED: " if n.paused_by_meta else "") + ", ".join(n.problems).upper())
    return " ".join(parts) or "-"


def _outbox_table(box: Outbox) -> Table | str:
    if not box.entries:
        return f"{box.number}: the outbox is empty"
    shown = f"first {len(box.entries)} of {box.depth}" if box.truncated else f"{box.depth}"
    table = Table(title=f"{box.number}: {shown} pending")
    for col in ("seq", "sid", "to", "status", "attempts", "age", "chars"):
        table.add_column(col, justify="right" if col in ("seq", "attempts", "age", "chars") else "left")
    now = time.time()
    for e in box.entries:
        age = _duration(now - e.date_created) if e.date_created else "-"
        table.add_row(str(e.seq), e.sid, e.to, e.status, str(e.attempts), age, str(e.body_chars))
    return table


def _reload_text(result: ReloadResult) -> str:
    if not result.ok:
        return f"reload rejected, the running config stays: {result.error}"
    parts = [
        f"{name}: {', '.join(values)}"
        for name, values in (
            ("added", result.added),
            ("removed", result.removed),
            ("replaced", result.replaced),
            ("retuned", result.retuned),
            ("needs a restart", result.restart_needed),
        )
        if values
    ]
    return "reloaded" + (" (" + "; ".join(parts) + ")" if parts else " (no changes)")


def _generic_table(value: object) -> Table | str:
    """A list of objects (or ``{"templates": [...]}``) as a table with one column per key."""
    rows = value.get("templates", value) if isinstance(value, dict) else value
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return json.dumps(value, indent=2, sort_keys=True)
    if not rows:
        return "no templates"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    table = Table()
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(
            *(v if isinstance(v, str) else json.dumps(v) for v in (row.get(c, "") for c in columns))
        )
    return table
