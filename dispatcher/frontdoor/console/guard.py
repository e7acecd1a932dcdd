"""Who may see the console, and the headers every console answer carries.

One ``before_request`` hook guards every path under ``/console`` (so a page added
later cannot forget it): without ``[admin] token`` the console is off (403);
without a valid session only the login page and its static assets answer, pages
redirect to the login page, the live JSON endpoints and actions answer 401.
Every POST must come from this origin (``Origin``, when the browser sends it) and,
past the login, carry the session's CSRF token.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

import structlog
from quart import Response, g, request
from quart_trio import QuartTrio

from dispatcher.frontdoor.console.session import COOKIE, SessionKeys

log = structlog.get_logger()

ROOT: Final = "/console"
PUBLIC: Final = ("/console/login", "/console/static/")
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def is_console(path: str) -> bool:
    return path == ROOT or path.startswith(ROOT + "/")


def _public(path: str) -> bool:
    return path == PUBLIC[0] or path.startswith(PUBLIC[1])


def secure_request() -> bool:
    """Served over TLS: here, or at a proxy in front that says so (it only makes the cookie stricter)."""
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def same_origin() -> bool:
    """A POST's ``Origin`` (when sent) names this host, as the browser reached it (``Host``, or the
    ``X-Forwarded-Host`` of a proxy in front): another site's form is refused. A browser never lets
    a page of another site set these headers."""
    given = request.headers.get("Origin")
    if given is None:
        return True
    hosts = {request.headers.get("Host", ""), request.headers.get("X-Forwarded-Host", "")} - {""}
    return any(given in (f"http://{host}", f"https://{host}") for host in hosts)


def see_other(location: str) -> Response:
    """303 to one of our own paths (after a POST, the browser GETs it)."""
    return Response("", status=303, headers={"Location": location})


def _refuse(status: int, text: str) -> Response:
    return Response(text, status=status, content_type="text/plain; charset=utf-8")


def install_guard(app: QuartTrio, keys: SessionKeys | None) -> None:
    """``keys`` None: no admin token, the console is off."""

    @app.before_request
    async def guard_console() -> Response | None:
        path = request.path
        if not is_console(path):
            return None
        if keys is None:
            return _refuse(403, "The console is disabled: set [admin] token in the config.")
        if request.method == "POST" and not same_origin():
            log.warning("console.cross_origin", path=path, origin=request.headers.get("Origin"))
            return _refuse(403, "Cross-origin request refused.")
        nonce = keys.nonce(request.cookies.get(COOKIE))
        if nonce is None:
            if _public(path):
                return None
            if path.startswith("/console/api/") or request.method != "GET":
                return _refuse(401, "Log in to the console first.")
            target = request.full_path if request.query_string else path
            return see_other(f"/console/login?{_next(target)}")
        g.console_nonce = nonce  # the session, for the routes (CSRF tokens)
        if request.method == "POST" and not _public(path):
            form = await request.form
            if not keys.csrf_matches(nonce, form.get("csrf")):
                log.warning("console.csrf_refused", path=path)
                return _refuse(403, "The form is stale or did not come from the console: reload the page.")
        return None

    @app.after_request
    async def console_headers(response: Response) -> Response:
        if is_console(request.path):
            for name, value in SECURITY_HEADERS.items():
                response.headers[name] = value
            if not request.path.startswith(PUBLIC[1]):
                response.headers["Cache-Control"] = "no-store"
        return response


def _next(target: str) -> str:
    return urlencode({"next": target})


def session_nonce() -> str:
    """The current request's session nonce (set by the guard; routes behind it only)."""
    nonce = getattr(g, "console_nonce", None)
    if not isinstance(nonce, str):
        raise RuntimeError("no console session on this request")
    return nonce


def safe_next(target: str | None) -> str:
    """Where to go after the login: a console path of ours only (no open redirect)."""
    if not target or not target.startswith("/console/") or target.startswith("//") or "\\" in target:
        return "/console/fleet"
    return target
