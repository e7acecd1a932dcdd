"""The console's routes: login, the four pages, their live JSON, the number actions, static assets.

Pages are server-rendered (Jinja2, autoescaped) and complete without JavaScript;
``static/console.js`` polls the ``/console/api/...`` twin of the page every 2 s and
writes the new cells in, and draws the plots with the vendored uPlot.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from importlib import resources
from typing import Final

import attrs
import msgspec
import structlog
import trio
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.core import secretpolicy
from dispatcher.core.clock import WallClock
from dispatcher.frontdoor.admin import normalize_number
from dispatcher.frontdoor.console import render
from dispatcher.frontdoor.console.guard import (
    install_guard,
    safe_next,
    secure_request,
    see_other,
    session_nonce,
)
from dispatcher.frontdoor.console.session import COOKIE, SessionKeys
from dispatcher.ops.callback_view import CallbackView
from dispatcher.ops.cluster_fleet import ClusterFleet
from dispatcher.ops.fleet_view import FleetPage, FleetView, QueryError, parse_fleet_query
from dispatcher.ops.message_search import MessageSearch, timeline
from dispatcher.ops.number_view import AGE_LABELS, NumberView
from dispatcher.ops.operations import Operations, UnknownNumber
from dispatcher.ops.samples import Sampler

log = structlog.get_logger()

LOGIN_FAILURE_DELAY: Final = 1.0  # seconds a wrong credential waits for its answer
POLL_INTERVAL_MS: Final = 2000
ACTIONS: Final = ("pause", "resume", "drain", "token-refresh")
STATIC: Final = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uplot/uPlot.min.css": "text/css; charset=utf-8",
    "uplot/LICENSE": "text/plain; charset=utf-8",
}
_encoder: Final = msgspec.json.Encoder()
HTML: Final = "text/html; charset=utf-8"


@attrs.frozen
class ConsoleServices:
    """What the console reads and steers (all on the ops floor)."""

    fleet: FleetView
    numbers: NumberView
    search: MessageSearch
    callbacks: CallbackView
    sampler: Sampler
    ops: Operations
    cluster_fleet: ClusterFleet | None = None  # [cluster]: every daemon's numbers on the fleet page


def _static_files() -> dict[str, tuple[bytes, str]]:
    root = resources.files("dispatcher.frontdoor.console") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for name, content_type in STATIC.items():
        item = root
        for part in name.split("/"):
            item = item / part
        files[name] = (item.read_bytes(), content_type)
    return files


def _json(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


def _utc(at: float | None, ms: bool = False) -> str:
    """A wall time as UTC text; ``ms``: to the millisecond (a message's statuses come close together)."""
    if at is None:
        return "—"
    moment = datetime.fromtimestamp(at, UTC)
    if ms:
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse_instant(raw: str | None, name: str) -> float | None:
    """``2026-12-06T05:30`` (a datetime-local field, read as UTC) -> Unix seconds."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise QueryError(f"{name}: expected a date and time like 2026-12-06T05:30") from None


def register_console(
    app: QuartTrio, services: ConsoleServices, *, admin_token: str | None, wall: WallClock
) -> None:
    """Mount the console; without ``admin_token`` every console path answers 403."""
    keys = None if admin_token is None else SessionKeys(admin_token, wall)
    install_guard(app, keys)
    env = render.environment()
    env.globals.update(
        utc=_utc,
        poll_ms=POLL_INTERVAL_MS,
        age_labels=AGE_LABELS,
        destination_cells=render.destination_cells,
        destination_columns=render.DESTINATION_COLUMNS,
    )
    for name in env.list_templates():
        env.get_template(name)  # compiled at start, not on an operator's first request
    files = _static_files()

    def page(template: str, status: int = 200, /, **context: object) -> Response:
        nonce = session_nonce() if keys is not None and keys.nonce(request.cookies.get(COOKIE)) else None
        csrf = keys.csrf(nonce) if keys is not None and nonce is not None else ""
        body = env.get_template(template).render(csrf=csrf, path=request.path, **context)
        return Response(body, status=status, content_type=HTML)

    def unknown(number: str) -> Response:
        message = f"No number {number} is configured."
        return page("error.html", 404, title="Unknown number", message=message)

    def bad_query(exc: QueryError) -> Response:
        return page("error.html", 400, title="Bad request", message=str(exc))

    @app.get("/console/static/<path:name>")
    async def console_static(name: str) -> Response:
        found = files.get(name)
        if found is None:
            return Response("Not found", status=404, content_type="text/plain; charset=utf-8")
        body, content_type = found
        response = Response(body, status=200, content_type=content_type)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    @app.get("/console")
    @app.get("/console/")
    async def console_home() -> Response:
        return see_other("/console/fleet")

    @app.get("/console/login")
    async def console_login_form() -> Response:
        if keys is not None and keys.nonce(request.cookies.get(COOKIE)) is not None:
            return see_other(safe_next(request.args.get("next")))
        return page("login.html", next=safe_next(request.args.get("next")), failed=False)

    @app.post("/console/login")
    async def console_login() -> Response:
        assert keys is not None and admin_token is not None  # the guard answered 403 otherwise
        form = await request.form
        target = safe_next(form.get("next"))
        if not secretpolicy.matches(form.get("token", ""), admin_token):
            log.warning("console.login_failed", remote=request.remote_addr)
            await trio.sleep(LOGIN_FAILURE_DELAY)
            return page("login.html", 401, next=target, failed=True)
        log.info("console.login", remote=request.remote_addr)
        response = see_other(target)
        response.set_cookie(
            COOKIE,
            keys.issue(),
            max_age=int(keys.ttl),
            path="/console",
            secure=secure_request(),
            httponly=True,
            samesite="Strict",
        )
        return response

    @app.post("/console/logout")
    async def console_logout() -> Response:
        response = see_other("/console/login")
        response.delete_cookie(
            COOKIE, path="/console", secure=secure_request(), httponly=True, samesite="Strict"
        )
        return response

    # -- fleet ------------------------------------------------------------------------

    async def fleet_data() -> tuple[FleetPage, list[list[render.Cell]]]:
        query = parse_fleet_query(request.args.get)
        merged = services.cluster_fleet
        fleet = services.fleet.page(query) if merged is None else await merged.page(query)
        return fleet, [render.fleet_cells(row, quality=fleet.has_quality) for row in fleet.rows]

    @app.get("/console/fleet")
    async def console_fleet_page() -> Response:
        try:
            fleet, rows = await fleet_data()
        except QueryError as exc:
            return bad_query(exc)
        query = fleet.query
        return page(
            "fleet.html",
            rows=rows,
            fleet=fleet,
            query=query,
            pages=max(1, math.ceil(fleet.total / query.page_size)),
            columns=render.fleet_columns(fleet.has_quality),
            url=lambda **changes: render.fleet_url(query, **changes),
            live=render.fleet_url(query).replace("/console/fleet", "/console/api/fleet", 1),
            sample_ms=round(services.sampler.last_duration * 1000, 2),
        )

    @app.get("/console/api/fleet")
    async def console_fleet_live() -> Response:
        try:
            fleet, rows = await fleet_data()
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(
            {
                "numbers": [row.number for row in fleet.rows],
                "rows": rows,
                "summary": {
                    "total": fleet.total,
                    "fleet": fleet.fleet,
                    "states": fleet.states,
                    "unreachable": list(fleet.unreachable),
                },
            }
        )

    # -- one number -------------------------------------------------------------------

    @app.get("/console/numbers/<number>")
    async def console_number_page(number: str) -> Response:
        number = normalize_number(number)
        try:
            row = services.fleet.row(number)
        except UnknownNumber:
            return unknown(number)
        plot_range = "5m" if request.args.get("range") == "5m" else "1h"
        return page(
            "number.html",
            row=row,
            cells=render.fleet_cells(row, quality=row.standing.known),
            columns=render.fleet_columns(row.standing.known),
            shape=services.numbers.outbox_shape(number),
            failures=services.numbers.failures(number, row.account),
            actions=ACTIONS,
            done=request.args.get("done", ""),
            plot_range=plot_range,
        )

    @app.get("/console/api/numbers/<number>")
    async def console_number_live(number: str) -> Response:
        number = normalize_number(number)
        try:
            row = services.fleet.row(number)
        except UnknownNumber:
            return _json({"error": f"No number {number} is configured"}, 404)
        sampler = services.sampler
        fine = request.args.get("range") == "5m"
        plot = sampler.fine_plot(number) if fine else sampler.coarse_plot(number)
        return _json(
            {
                "numbers": [number],
                "rows": [render.fleet_cells(row, quality=row.standing.known)],
                "plot": render.plot_json(plot),
                "latency": render.plot_json(sampler.coarse_plot(number)) if fine else None,
            }
        )

    @app.post("/console/numbers/<number>/<action>")
    async def console_number_action(number: str, action: str) -> Response:
        number = normalize_number(number)
        if action not in ACTIONS:
            return page("error.html", 404, title="Unknown action", message=f"No action {action}.")
        form = await request.form
        try:
            services.fleet.row(number)
            if form.get("confirmed") != "yes":
                return page("confirm.html", number=number, action=action)
            log.info("console.action", number=number, action=action)
            ops = services.ops
            if action == "pause":
                ops.pause(number)
            elif action == "resume":
                ops.resume(number)
            elif action == "drain":
                ops.drain(number)
            else:
                await ops.refresh_token(number)
        except UnknownNumber:
            return unknown(number)
        except Exception as exc:  # a failed login against the channel: say so, keep the console up
            log.warning("console.action_failed", number=number, action=action, error=str(exc))
            return page("error.html", 502, title=f"{action} failed", message=f"{number}: {exc}")
        return see_other(f"{render.number_href(number)}?done={action}")

    # -- messages -----------------------------------------------------------------------

    @app.get("/console/messages")
    async def console_messages_page() -> Response:
        args = request.args
        sid = (args.get("sid") or "").strip()
        to = (args.get("to") or "").strip()
        context: dict[str, object] = {"sid": sid, "to": to, "since_raw": "", "until_raw": ""}
        if sid:
            record = services.search.by_sid(sid)
            context.update(
                record=record,
                steps=timeline(record) if record is not None else [],
                attempts=services.callbacks.attempts(sid) if record is not None else [],
            )
        elif to:
            now = wall.now()
            try:
                since = _parse_instant(args.get("since"), "since")
                until = _parse_instant(args.get("until"), "until")
            except QueryError as exc:
                return bad_query(exc)
            since = now - 86400.0 if since is None else since
            until = now + 60.0 if until is None else until
            context.update(
                found=services.search.by_recipient(normalize_number(to), since, until),
                since_raw=args.get("since", ""),
                until_raw=args.get("until", ""),
                since=since,
                until=until,
            )
        return page("messages.html", **context)

    # -- callbacks ------------------------------------------------------------------------

    @app.get("/console/callbacks")
    async def console_callbacks_page() -> Response:
        return page("callbacks.html", view=services.callbacks.overview())

    @app.get("/console/api/callbacks")
    async def console_callbacks_live() -> Response:
        view = services.callbacks.overview()
        rows = [render.destination_cells(d) for d in view.destinations]
        return _json({"numbers": [d.origin for d in view.destinations], "rows": rows})
