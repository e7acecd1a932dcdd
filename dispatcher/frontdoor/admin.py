"""The admin API under ``/admin/v1``: a separate bearer credential, JSON in and out.

Every path under ``/admin/`` is guarded by one ``before_request`` hook, so a
route added later (by any module) cannot forget the check. Without
``[admin] token`` the admin API is off: every admin path answers 403.
"""

from __future__ import annotations

from typing import Final

import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio

from dispatcher.core import secretpolicy
from dispatcher.core.twilio import CHANNEL_PREFIX, TwilioError
from dispatcher.ops.cluster import ClusterView
from dispatcher.ops.cluster_fleet import cluster_numbers
from dispatcher.ops.operations import Operations, UnknownNumber

log = structlog.get_logger()

PREFIX: Final = "/admin/v1"
_encoder: Final = msgspec.json.Encoder()


def bearer_matches(authorization: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if token is None or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secretpolicy.matches(given.strip(), token)


def require_admin(token: str | None) -> None:
    """Raise the admin API's 401/403 unless the request carries the admin token."""
    if token is None:
        raise TwilioError(403, 20003, "The admin API is disabled: set [admin] token in the config")
    if not bearer_matches(request.headers.get("Authorization"), token):
        log.warning("admin.unauthorized", path=request.path, remote=request.remote_addr)
        raise TwilioError(401, 20003, "Authenticate: the admin API needs 'Authorization: Bearer <token>'")


def normalize_number(value: str) -> str:
    """``15550001111``, ``+15550001111`` or ``whatsapp:+15550001111`` -> ``+15550001111``."""
    raw = value.strip()
    if raw.startswith(CHANNEL_PREFIX):
        raw = raw[len(CHANNEL_PREFIX) :]
    return raw if raw.startswith("+") else "+" + raw


def _json(value: object, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


def register_admin(
    app: QuartTrio, ops: Operations, token: str | None, cluster: ClusterView | None = None
) -> None:
    """The admin routes; ``cluster``: the view over every daemon (``/admin/v1/cluster``)."""

    @app.before_request
    async def guard_admin() -> None:
        if request.path == "/admin" or request.path.startswith("/admin/"):
            require_admin(token)

    @app.errorhandler(UnknownNumber)
    async def unknown_number(exc: UnknownNumber) -> Response:
        body = TwilioError(404, 20404, f"No number {exc.args[0]} is configured").body()
        return Response(body, status=404, content_type="application/json")

    @app.get(f"{PREFIX}/status")
    async def status() -> Response:
        """This daemon's status; ``?scope=cluster``: every daemon's numbers and owned buckets in one
        (503 + Retry-After naming the daemons that did not answer: a fleet missing them would look whole)."""
        scope = request.args.get("scope", "daemon")
        if scope == "daemon" or (scope == "cluster" and cluster is None):
            return _json(ops.status())
        if scope != "cluster":
            raise TwilioError(400, 20001, f"scope: daemon or cluster, got {scope[:40]!r}")
        assert cluster is not None
        view = await cluster.status()
        missing = [d.owner_id for d in view.daemons if not d.reachable]
        if missing:
            error = TwilioError(
                503, 20503, f"Service unavailable: {', '.join(missing)} did not answer; retry shortly."
            )
            response = Response(error.body(), status=503, content_type="application/json")
            response.headers["Retry-After"] = "1"
            return response
        return _json(cluster_numbers(view))

    if cluster is not None:

        @app.get(f"{PREFIX}/cluster")
        async def cluster_status() -> Response:
            return _json(await cluster.status())

    @app.get(f"{PREFIX}/numbers/<number>/outbox")
    async def outbox(number: str) -> Response:
        try:
            limit = int(request.args.get("limit", "100"))
        except ValueError:
            raise TwilioError(400, 20001, "limit: expected an integer") from None
        if limit < 1:
            raise TwilioError(400, 20001, "limit: must be at least 1")
        return _json(ops.outbox(normalize_number(number), limit=limit))

    @app.post(f"{PREFIX}/numbers/<number>/pause")
    async def pause(number: str) -> Response:
        number = normalize_number(number)
        log.info("admin.pause", number=number)
        return _json(ops.pause(number))

    @app.post(f"{PREFIX}/numbers/<number>/resume")
    async def resume(number: str) -> Response:
        number = normalize_number(number)
        log.info("admin.resume", number=number)
        return _json(ops.resume(number))

    @app.post(f"{PREFIX}/numbers/<number>/drain")
    async def drain(number: str) -> Response:
        number = normalize_number(number)
        log.info("admin.drain", number=number)
        return _json(ops.drain(number))

    @app.post(f"{PREFIX}/numbers/<number>/token/refresh")
    async def refresh_token(number: str) -> Response:
        number = normalize_number(number)
        log.info("admin.token_refresh", number=number)
        try:
            return _json(await ops.refresh_token(number))
        except UnknownNumber:
            raise
        except Exception as exc:
            log.warning("admin.token_refresh_failed", number=number, error=str(exc))
            raise TwilioError(502, 20500, f"Login for {number} failed: {exc}") from exc

    @app.post(f"{PREFIX}/reload")
    async def reload() -> Response:
        log.info("admin.reload")
        result = await ops.reload()
        return _json(result, 200 if result.ok else 422)
