"""The HTTP front door: quart-trio routes over the Messages resource, served by hypercorn in our nursery.

Routes stay thin: decode the request, call the object that serves it, encode the answer.
Every error leaves as Twilio's error JSON, quart's own (404, 405, 408, 413)
included; an exception no route expected is a JSON 500 with a request id
(``errors``), never an HTML page. A route reads its body only once the
request's credentials are good, within ``body_timeout`` (quart's
``BODY_TIMEOUT``: a 408 after it).
"""

from __future__ import annotations

import msgspec
import structlog
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, InternalServerError

from actors.supervisor import Supervisor
from dispatcher.channels.spec_webhook import SpecWebhooks
from dispatcher.config import MediaConfig
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.params import Params, parse_body
from dispatcher.core.twilio import API_VERSION, TwilioError, encode_message
from dispatcher.frontdoor import errors, hot_routes, limits
from dispatcher.frontdoor.admin import bearer_matches, register_admin, require_admin
from dispatcher.frontdoor.admin_numbers import register_number_routes
from dispatcher.frontdoor.admin_templates import (
    WabaTemplates,
    register_template_routes,
    register_waba_template_routes,
)
from dispatcher.frontdoor.cloud_app import CloudAppWebhook
from dispatcher.frontdoor.cloud_app import install as install_cloud_app_webhook
from dispatcher.frontdoor.cloud_routes import CloudWebhooks
from dispatcher.frontdoor.cloud_routes import install as install_cloud_webhooks
from dispatcher.frontdoor.cluster_fleet import register_fleet_part
from dispatcher.frontdoor.cluster_lists import (
    PART_CONTENT_TYPE,
    PART_HEADER,
    ClusterLists,
    ListUnavailable,
    encode_part,
)
from dispatcher.frontdoor.console.routes import ConsoleServices, register_console
from dispatcher.frontdoor.content_routes import register_content_routes
from dispatcher.frontdoor.hot_routes import HotRoutes
from dispatcher.frontdoor.media import register_media_routes
from dispatcher.frontdoor.pages import encode_page
from dispatcher.frontdoor.spec_routes import install as install_spec_webhooks
from dispatcher.messages import listing
from dispatcher.messages.auth import Authenticator
from dispatcher.messages.content import ContentLibrary
from dispatcher.messages.edits import Edits
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.handoff import Handoff
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.ops.cluster import ClusterView
from dispatcher.ops.doctor import Doctor
from dispatcher.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from dispatcher.ops.metrics import Metrics, RequestCounts
from dispatcher.ops.onboarding import Onboarding
from dispatcher.ops.operations import Operations

log = structlog.get_logger()

JSON = "application/json"
MAX_REQUEST_BYTES = limits.MAX_REQUEST_BYTES
CREATE_ROUTE = f"/{API_VERSION}/Accounts/<account_sid>/Messages.json"
BATCH_ROUTE = "/v1/messages:batch"
_encoder = msgspec.json.Encoder()


def _json(body: bytes, status: int) -> Response:
    return Response(body, status=status, content_type=JSON)


def make_app(
    *,
    buckets: Buckets,
    auth: Authenticator,
    gateway: Gateway,
    routes: HotRoutes,
    edits: Edits,
    templates: TemplateRegistry,
    directory: Directory,
    cloud_hooks: CloudWebhooks,
    handoff: Handoff,
    supervisor: Supervisor,
    ops: Operations,
    admin_token: str | None = None,
    metrics: Metrics | None = None,
    requests: RequestCounts | None = None,
    protect_metrics: bool = False,
    body_timeout: float = limits.BODY_TIMEOUT,
    media: MediaConfig | None = None,
    console: ConsoleServices | None = None,
    wall: WallClock | None = None,
    numbers: tuple[Onboarding, Doctor] | None = None,
    content: ContentLibrary | None = None,
    waba_templates: WabaTemplates | None = None,
    cluster: ClusterView | None = None,
    spec_webhooks: SpecWebhooks | None = None,
    public_url: str | None = None,
    lists: ClusterLists | None = None,
    cloud_app: CloudAppWebhook | None = None,
) -> QuartTrio:
    """The front door over the objects that serve its routes: ``buckets`` (listing), ``auth`` (every
    route of an account), ``gateway`` (fetch), ``routes`` (create, batch, On-Prem webhooks), ``edits``,
    ``templates`` and ``ops`` (admin API), ``directory`` (webhook numbers), ``cloud_hooks``,
    ``handoff`` (media downloads), ``supervisor`` (health); ``metrics`` adds /metrics, ``console``
    the operator console under /console/ (behind ``admin_token``; ``wall`` dates its sessions);
    ``numbers`` (onboarding and the doctor) their admin routes; ``content`` the Content API
    (/v1/Content), ``waba_templates`` the admin API's WABA templates; ``cluster`` the view over every
    daemon (``/admin/v1/cluster``); ``lists`` a list's buckets read by their owners (daemons that do
    not share a data root); ``cloud_app`` the app-level Cloud webhook (``/webhooks/cloud``)."""
    app = QuartTrio("wadispatch")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["BODY_TIMEOUT"] = body_timeout
    if requests is not None:
        requests.install(app)
    register_admin(app, ops, admin_token, cluster)
    register_template_routes(app, templates)
    if waba_templates is not None:
        register_waba_template_routes(app, waba_templates)
    if content is not None:
        register_content_routes(app, auth=auth, library=content)
    if console is not None:
        if wall is None:
            raise ValueError("the console needs a wall clock (its sessions expire)")
        register_console(app, console, admin_token=admin_token, wall=wall)
        register_fleet_part(app, console.fleet)  # another daemon's fleet page asks for our share
    if numbers is not None:
        register_number_routes(app, *numbers, lists=lists)

    if metrics is not None:

        @app.get("/metrics")
        async def metrics_text() -> Response:
            if protect_metrics:
                require_admin(admin_token)
            return Response(metrics.render(), status=200, content_type=METRICS_CONTENT_TYPE)

    prefix = f"/{API_VERSION}/Accounts/<account_sid>"

    @app.errorhandler(TwilioError)
    async def twilio_error(exc: TwilioError) -> Response:
        response = _json(exc.body(), exc.status)
        for name, value in exc.headers():
            response.headers[name.decode()] = value.decode()
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        if isinstance(exc, InternalServerError):  # quart's own handler failed, or a route raised it
            return await internal_error(exc.original_exception or exc)
        if exc.code == 408:
            response = _json(errors.body_timed_out(body_timeout).body(), 408)
            response.headers["Connection"] = "close"  # the rest of the body is not waited for
            return response
        error = errors.http_error(exc, request.path)
        response = _json(error.body(), error.status)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value  # e.g. a 405's Allow
        return response

    @app.errorhandler(Exception)
    async def internal_error(exc: BaseException) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else None
        error, request_id = errors.internal_error(
            rule or errors.loggable_path(request.path), request.method, exc
        )
        response = _json(error.body(), 500)
        response.headers[errors.REQUEST_ID_HEADER] = request_id
        return response

    async def read_body() -> bytes:
        return await request.get_data(True, False, False)

    async def body_params() -> Params:
        return parse_body(request.headers.get("Content-Type"), await read_body())

    @app.post(CREATE_ROUTE)
    async def create_message(account_sid: str) -> Response:
        body = await routes.create_message(account_sid, request.headers.get, read_body)
        return _json(body, hot_routes.CREATE_STATUS)

    @app.get(f"{prefix}/Messages.json")
    async def list_messages(account_sid: str) -> Response:
        authorization = request.headers.get("Authorization")
        auth.authenticate(authorization, account_sid)
        query = listing.parse_query({k: request.args.getlist(k) for k in request.args})
        if lists is None:  # every bucket's live Store is here
            return _json(encode_page(account_sid, query, listing.read_page(buckets, account_sid, query)), 200)
        try:
            if (part := request.headers.get(PART_HEADER)) is not None:  # another daemon's list
                records = listing.read_part(buckets, account_sid, query, lists.part_buckets(part))
                return Response(encode_part(records), status=200, content_type=PART_CONTENT_TYPE)
            target = request.scope.get("raw_path") or request.path.encode()
            if request.query_string:
                target += b"?" + request.query_string
            gathered = await lists.gather(query, target, authorization)
        except ListUnavailable as exc:
            response = _json(exc.body(), exc.status)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        page = listing.read_page(buckets, account_sid, query, local=gathered.local, parts=gathered.parts)
        return _json(encode_page(account_sid, query, page), 200)

    @app.get(f"{prefix}/Messages/<sid>.json")
    async def fetch_message(account_sid: str, sid: str) -> Response:
        auth.authenticate(request.headers.get("Authorization"), account_sid)
        return _json(encode_message(gateway.fetch(account_sid, sid)), 200)

    @app.post(f"{prefix}/Messages/<sid>.json")
    async def update_message(account_sid: str, sid: str) -> Response:
        auth.authenticate(request.headers.get("Authorization"), account_sid)
        record = await edits.update(account_sid, sid, await body_params())
        return _json(encode_message(record), 200)

    @app.delete(f"{prefix}/Messages/<sid>.json")
    async def delete_message(account_sid: str, sid: str) -> Response:
        auth.authenticate(request.headers.get("Authorization"), account_sid)
        await edits.delete(account_sid, sid)
        return Response(b"", status=204)

    @app.post(BATCH_ROUTE)
    async def batch_messages() -> Response:
        body = await routes.batch_messages(request.headers.get, read_body)
        return _json(body, hot_routes.BATCH_STATUS)

    @app.post("/webhooks/onprem/<digits>/<secret>")
    async def onprem_webhook_path(digits: str, secret: str) -> Response:
        return await _onprem_webhook(routes, directory.webhook_number(digits, secret), digits)

    @app.post("/webhooks/onprem/<digits>")
    async def onprem_webhook_header(digits: str) -> Response:
        info = directory.by_digits(digits)
        secret = request.headers.get(info.webhook_header, "") if info is not None else ""
        return await _onprem_webhook(routes, directory.webhook_number(digits, secret, via="header"), digits)

    register_media_routes(app, auth=auth, gateway=gateway, handoff=handoff, config=media)
    install_cloud_webhooks(app, directory, cloud_hooks)
    if cloud_app is not None:
        install_cloud_app_webhook(app, cloud_app)
    if spec_webhooks is not None:
        install_spec_webhooks(app, directory, cloud_hooks, spec_webhooks, public_url=public_url)

    @app.get("/healthz")
    async def healthz() -> Response:
        """Public: each number's state and, if unhealthy, a reason code (``crash_loop``,
        ``credentials``, ``storage``). The details (an exception's text, Meta's error message)
        only with the admin token: they may name paths, hosts or credentials."""
        states = supervisor.states()
        ok = all(state == "running" for state in states.values())
        health: dict[str, object] = {
            "status": "ok" if ok else "degraded",
            "numbers": states,
            "degraded": supervisor.reasons(),
        }
        if bearer_matches(request.headers.get("Authorization"), admin_token):
            health["details"] = supervisor.degraded()
        return _json(_encoder.encode(health), 200 if ok else 503)

    return app


async def _onprem_webhook(routes: HotRoutes, info: NumberInfo | None, digits: str) -> Response:
    """Authenticated by the caller's route (the path form is served by the fast lane in the daemon)."""
    body: bytes = b"" if info is None else await request.get_data(as_text=False)  # type: ignore[assignment]
    status, answer = await routes.onprem_webhook(info, digits, body, request.remote_addr)
    return _json(answer, status)
