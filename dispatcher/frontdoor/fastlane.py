"""A raw ASGI lane in front of quart for the hot routes.

Profiles of single creates showed hypercorn + quart at ~85% of a create's CPU,
most of it quart's request/response machinery (contexts, werkzeug routing,
header objects, hooks) rather than the route's own work. This lane serves
exactly ``POST .../Messages.json``, ``POST /v1/messages:batch`` and the On-Prem
status webhook (``POST /webhooks/onprem/<digits>/<secret>``) itself, by calling
the same functions as the quart routes (``hot_routes``), and hands
every other request (and the lifespan) to the quart app unchanged. Answers are
the quart routes' answers: same status, same JSON bytes, same content type.

A body is read only once the request's credentials are good, at most
``max_request_bytes`` bytes and within ``body_timeout`` seconds from the first read (a
client that trickles its body gets a 408 and the connection is closed); an
exception no route expected is a JSON 500 with a request id (``errors``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

import structlog
import trio
from hypercorn.typing import ASGIFramework, HTTPScope, Scope
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send

from dispatcher.core.directory import Directory
from dispatcher.core.twilio import API_VERSION, TwilioError
from dispatcher.frontdoor import errors, hot_routes, limits
from dispatcher.ops.metrics import RequestCounts

log = structlog.get_logger()


# Same shapes as the quart rules (werkzeug's default converter is ``[^/]+``).
_CREATE: Final = re.compile(rf"^/{re.escape(API_VERSION)}/Accounts/([^/]+)/Messages\.json$")
_BATCH_PATH: Final = "/v1/messages:batch"
_CREATE_ROUTE: Final = f"/{API_VERSION}/Accounts/<account_sid>/Messages.json"
_ONPREM_WEBHOOK: Final = re.compile(r"^/webhooks/onprem/([^/]+)/([^/]+)$")
_ONPREM_WEBHOOK_ROUTE: Final = "/webhooks/onprem/<digits>/<secret>"
_WEBHOOK_TOO_LARGE: Final = b'{"error":"body too large"}'
_WEBHOOK_TIMED_OUT: Final = b'{"error":"body not received in time"}'


class _TooLarge(Exception):
    pass


class _TimedOut(Exception):
    pass


class _Disconnected(Exception):
    pass


def _header_lookup(raw: Iterable[tuple[bytes, bytes]]) -> hot_routes.HeaderLookup:
    """First value per name, names case-insensitive, values latin-1 (as werkzeug decodes them)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def lookup(name: str) -> str | None:
        return headers.get(name.lower())

    return lookup


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk = message["body"]
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message["more_body"]:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, extra: errors.Headers | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


_CLOSE: Final = [(b"connection", b"close")]


class FastLane:
    """ASGI app: the hot routes served here, everything else by ``app``."""

    def __init__(
        self,
        app: ASGIFramework,
        routes: hot_routes.HotRoutes,
        directory: Directory,
        *,
        max_request_bytes: int,
        body_timeout: float = limits.BODY_TIMEOUT,
        requests: RequestCounts | None = None,
    ) -> None:
        self._app = app
        self._routes = routes
        self._directory = directory
        self._max_request_bytes = max_request_bytes
        self._body_timeout = body_timeout
        self._requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path == _BATCH_PATH:
                return await self._serve(scope, receive, send, _BATCH_PATH, None)
            match = _CREATE.match(path)
            if match is not None:
                return await self._serve(scope, receive, send, _CREATE_ROUTE, match.group(1))
            match = _ONPREM_WEBHOOK.match(path)
            if match is not None:
                return await self._webhook(scope, receive, send, match.group(1), match.group(2))
        await self._app(scope, receive, send)

    async def _body(self, receive: Receive, header: hot_routes.HeaderLookup) -> bytes:
        """The whole body: at most ``max_request_bytes`` bytes, all of it within ``body_timeout``."""
        length = header("Content-Length")
        if length is not None and length.isdigit() and int(length) > self._max_request_bytes:
            raise _TooLarge
        with trio.CancelScope(deadline=trio.current_time() + self._body_timeout):
            return await _read_body(receive, self._max_request_bytes)
        raise _TimedOut

    async def _serve(
        self, scope: HTTPScope, receive: Receive, send: Send, route: str, account: str | None
    ) -> None:
        header = _header_lookup(scope["headers"])
        body = functools.partial(self._body, receive, header)
        extra: errors.Headers | None = None
        try:
            if account is None:
                status, answer = (
                    hot_routes.BATCH_STATUS,
                    await self._routes.batch_messages(header, body),
                )
            else:
                answer = await self._routes.create_message(account, header, body)
                status = hot_routes.CREATE_STATUS
        except TwilioError as exc:
            status, answer, extra = exc.status, exc.body(), exc.headers() or None
        except _TooLarge:
            error = errors.body_too_large()
            status, answer = error.status, error.body()
        except _TimedOut:
            error = errors.body_timed_out(self._body_timeout)
            status, answer, extra = error.status, error.body(), _CLOSE
        except _Disconnected:
            return  # the client went away before its body arrived: nothing was done, nobody to answer
        except Exception as exc:
            # Quart would answer an HTML 500; the API answers in its own JSON shape, and says why in the log.
            error, request_id = errors.internal_error(route, "POST", exc)
            status, answer, extra = error.status, error.body(), errors.request_id_header(request_id)
        if self._requests is not None:
            self._requests.count("POST", route, status)
        await _respond(send, status, answer, extra)

    async def _webhook(
        self, scope: HTTPScope, receive: Receive, send: Send, digits: str, secret: str
    ) -> None:
        """The On-Prem status webhook (secret in the path): its body is read only once authenticated."""
        info = self._directory.webhook_number(digits, secret)
        client = scope.get("client")
        remote = client[0] if client else None
        extra: errors.Headers | None = None
        try:
            body = b"" if info is None else await self._body(receive, _header_lookup(scope["headers"]))
            status, answer = await self._routes.onprem_webhook(info, digits, body, remote)
        except _TooLarge:
            status, answer = 413, _WEBHOOK_TOO_LARGE
        except _TimedOut:
            status, answer, extra = 408, _WEBHOOK_TIMED_OUT, _CLOSE
        except _Disconnected:
            return
        except Exception as exc:
            error, request_id = errors.internal_error(_ONPREM_WEBHOOK_ROUTE, "POST", exc)
            status, answer, extra = error.status, error.body(), errors.request_id_header(request_id)
        if self._requests is not None:
            self._requests.count("POST", _ONPREM_WEBHOOK_ROUTE, status)
        await _respond(send, status, answer, extra)
