"""``wadispatch numbers add|verify|register|profile|remove|list`` and ``wadispatch doctor``.

Onboarding a Cloud number through a running daemon's admin API, step by step (or an On-Prem
number of the config: ``add --cert-file``, ``verify``, ``register`` sets its webapp's webhooks):
each command prints every step it ran (done, skipped, failed) and, on failure,
the step and Meta's error, then the command to run next. The two-step PIN is
read from ``--pin-file`` or ``$WADISPATCH_PIN`` (or asked for on a terminal),
never from the command line.

Exit codes as ``admincli``'s: 0 done, 1 a step failed or the daemon refused
(doctor: a check failed), 2 bad usage, 3 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Final, Protocol, TypeVar

import msgspec
from rich.console import Console
from rich.table import Table

from dispatcher.ops.doctor import Report
from dispatcher.ops.onboarding import OnboardStatus, Profile

T = TypeVar("T")

COMMANDS: Final = ("numbers", "doctor")
_MARKS: Final = {"done": "[green]done[/]", "skipped": "[dim]skipped[/]", "failed": "[red]FAILED[/]"}
_LEVELS: Final = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


class CommandFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Admin(Protocol):
    """The admin API client (``admincli``): one call, its status and body."""

    def call(self, method: str, path: str, body: object, accept: tuple[int, ...]) -> tuple[int, bytes]: ...


class _Failure(msgspec.Struct):
    message: str
    step: str
    status: OnboardStatus


class _Listed(msgspec.Struct):
    numbers: list[OnboardStatus]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    numbers = sub.add_parser(
        "numbers",
        help="onboard numbers: Cloud (verify, register, webhooks, profile) or On-Prem (account, settings)",
    )
    actions = numbers.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", parents=[common], help="find or add the number in its WABA; Meta sends a code"
    )
    add.add_argument("number", help="E.164, e.g. +15550001111")
    add.add_argument("--waba", help="a Cloud number's WhatsApp Business Account id (in [[wabas]])")
    add.add_argument("--cert-file", help="an On-Prem number: the base64 certificate from Business Manager")
    add.add_argument("--pin-file", help="an On-Prem number with two-step verification: its PIN")
    add.add_argument("--account", help="the account (AC...) it sends for (default: the WABA's)")
    add.add_argument("--verified-name", default="", help="display name, to add a number not yet in the WABA")
    add.add_argument("--voice", action="store_true", help="have the code called out instead of texted")
    verify = actions.add_parser("verify", parents=[common], help="submit the code Meta sent")
    verify.add_argument("number")
    verify.add_argument("code")
    register = actions.add_parser(
        "register", parents=[common], help="register with the two-step PIN, subscribe webhooks, start sending"
    )
    register.add_argument("number")
    register.add_argument(
        "--pin-file", help="file holding the 6-digit two-step PIN (default: $WADISPATCH_PIN)"
    )
    profile = actions.add_parser("profile", parents=[common], help="show or set the business profile")
    profile.add_argument("number")
    for name in ("about", "address", "description", "email", "vertical"):
        profile.add_argument(f"--{name}")
    profile.add_argument("--website", action="append", help="up to two; repeat the option")
    remove = actions.add_parser("remove", parents=[common], help="stop sending from it here and forget it")
    remove.add_argument("number")
    remove.add_argument("--deregister", action="store_true", help="also deregister it at Meta")
    actions.add_parser("list", parents=[common], help="the numbers onboarded here and where each stands")
    doctor = sub.add_parser("doctor", parents=[common], help="check the Cloud numbers' setup, with fixes")
    doctor.add_argument("number", nargs="?")


def run(args: argparse.Namespace, admin: Admin, out: Console) -> int:
    if args.command == "doctor":
        return _doctor(args, admin, out)
    action = args.action
    if action == "list":
        listed = _decode(admin.call("GET", "/numbers", None, (200,))[1], _Listed)
        return _emit(args, out, listed, lambda: _list_table(listed.numbers))
    number = _digits(args.number)
    if action == "add":
        body: dict[str, object] = {"number": "+" + number, "verified_name": args.verified_name}
        if args.waba:
            body["waba"] = args.waba
        elif args.cert_file:
            body["cert"] = _read(args.cert_file)
            pin = _pin(args.pin_file, ask=False)
            if pin is not None:
                body["pin"] = pin
        else:
            raise CommandFailed("give --waba (a Cloud number) or --cert-file (an On-Prem number)", 2)
        if args.account:
            body["account"] = args.account
        if args.voice:
            body["code_method"] = "VOICE"
        return _steps(args, out, admin.call("POST", "/numbers", body, (201, 502)))
    if action == "verify":
        return _steps(
            args, out, admin.call("POST", f"/numbers/{number}/verify", {"code": args.code}, (200, 502))
        )
    if action == "register":
        pin = _pin(args.pin_file, ask=True)
        body = {} if pin is None else {"pin": pin}  # an On-Prem number takes none
        return _steps(args, out, admin.call("POST", f"/numbers/{number}/register", body, (200, 502)))
    if action == "profile":
        return _profile(args, admin, out, number)
    if action == "remove":
        path = f"/numbers/{number}" + ("?deregister=true" if args.deregister else "")
        return _steps(args, out, admin.call("DELETE", path, None, (200, 502)))
    raise AssertionError(action)


def _steps(args: argparse.Namespace, out: Console, answer: tuple[int, bytes]) -> int:
    """Print each step's outcome; on failure the step, Meta's error and what to run next."""
    status_code, content = answer
    if args.json:
        sys.stdout.write(content.decode() + "\n")
        return 0 if status_code < 400 else 1
    if status_code >= 400:
        failure = _decode(content, _Failure)
        _print_steps(out, failure.status)
        out.print(f"[red]{failure.status.number}: {failure.message}[/]", highlight=False)
        if failure.status.next:
            out.print(f"then: {failure.status.next}", highlight=False)
        return 1
    status = _decode(content, OnboardStatus)
    _print_steps(out, status)
    pnid = f" (phone number id {status.phone_number_id})" if status.phone_number_id else ""
    out.print(f"{status.number}: {status.state}{pnid}", highlight=False)
    if status.next:
        out.print(f"next: {status.next}", highlight=False)
    return 0


def _print_steps(out: Console, status: OnboardStatus) -> None:
    for step in status.steps:
        out.print(
            f"  {step.step:<13} {_MARKS.get(step.outcome, step.outcome)}  {step.detail}", highlight=False
        )


def _profile(args: argparse.Namespace, admin: Admin, out: Console, number: str) -> int:
    fields = {k: getattr(args, k) for k in ("about", "address", "description", "email", "vertical")}
    update = {k: v for k, v in fields.items() if v is not None}
    if args.website:
        update["websites"] = args.website
    if update:
        status_code, content = admin.call("POST", f"/numbers/{number}/profile", update, (200, 502))
        if status_code >= 400:
            return _steps(args, out, (status_code, content))
    else:
        content = admin.call("GET", f"/numbers/{number}/profile", None, (200,))[1]
    profile = _decode(content, Profile)

    def table() -> Table:
        shown = Table(title=f"+{number}: business profile", show_header=False)
        for key, value in msgspec.structs.asdict(profile).items():
            if value is not None:
                shown.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
        return shown

    return _emit(args, out, profile, table)


def _doctor(args: argparse.Namespace, admin: Admin, out: Console) -> int:
    path = "/doctor" + (f"?number={_digits(args.number)}" if args.number else "")
    report = _decode(admin.call("GET", path, None, (200,))[1], Report)
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
        return 0 if report.ok else 1
    if not report.numbers:
        out.print("no Cloud numbers run here")
    for diagnosis in report.numbers:
        table = Table(title=f"{diagnosis.number}: {diagnosis.level}", title_justify="left")
        for col in ("check", "", "found", "fix"):
            table.add_column(col, overflow="fold")
        for check in diagnosis.checks:
            table.add_row(check.name, _LEVELS[check.level], check.detail, check.fix)
        out.print(table)
    return 0 if report.ok else 1


def _list_table(numbers: list[OnboardStatus]) -> Table | str:
    if not numbers:
        return "no numbers onboarded here (wadispatch numbers add NUMBER --waba ID)"
    table = Table(title=f"{len(numbers)} numbers onboarded")
    for col in ("number", "waba", "phone number id", "state", "done", "last error", "next"):
        table.add_column(col, overflow="fold")
    for n in numbers:
        error = f"{n.error.step}: {n.error.message}" if n.error else ""
        table.add_row(
            n.number, n.waba_id, n.phone_number_id or "-", n.state, ", ".join(n.done), error, n.next or ""
        )
    return table


def _pin(pin_file: str | None, *, ask: bool) -> str | None:
    """The two-step PIN from ``pin_file``, ``$WADISPATCH_PIN`` or (``ask``, on a terminal) a prompt;
    None if none is given (the daemon says whether the number needs one)."""
    if pin_file:
        pin = _read(pin_file)
    else:
        pin = os.environ.get("WADISPATCH_PIN", "")
        if not pin and ask and sys.stdin.isatty():
            pin = getpass.getpass("two-step verification PIN (6 digits; empty for an On-Prem number): ")
    return pin.strip() or None


def _read(name: str) -> str:
    try:
        return Path(name).read_text().strip()
    except OSError as exc:
        raise CommandFailed(f"cannot read {name}: {exc.strerror}", 2) from exc


def _digits(number: str) -> str:
    raw = number.strip().removeprefix("whatsapp:").removeprefix("+")
    if not raw.isdigit():
        raise CommandFailed(f"not a phone number: {number!r} (expected +15550001111)", 2)
    return raw


def _decode(content: bytes, type: type[T]) -> T:
    try:
        return msgspec.json.decode(content, type=type)
    except msgspec.DecodeError as exc:
        raise CommandFailed(f"unexpected answer from the daemon: {exc}", 1) from exc


def _emit(args: argparse.Namespace, out: Console, value: object, human: object) -> int:
    if args.json:
        sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    else:
        assert callable(human)
        out.print(human())
    return 0
