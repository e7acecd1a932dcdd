"""Every answer of the front door is JSON in Twilio's error shape, an internal error included.

- ``http_error``: werkzeug's HTTP exceptions (quart's own 404, 405, 408, 413, ...)
  as Twilio error JSON instead of werkzeug's HTML page.
- ``internal_error``: the last resort for an exception no route expected: a
  Twilio-shaped 500 whose ``Twilio-Request-Id`` header (Twilio's name for it,
  ``RQ`` + 32 hex digits) names the one log line that holds the traceback.
  Twilio sends that header with every answer; this daemon mints an id only
  when there is something to find in the log.
- ``LastResort``: an ASGI wrapper for what escapes quart itself (hypercorn
  would answer an empty 500 and log to stderr).
"""

from __future__ import annotations

import uuid
from typing import Final

import structlog
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from werkzeug.exceptions import HTTPException

from dispatcher.core.twilio import TwilioError

log = structlog.get_logger()

REQUEST_ID_HEADER: Final = "Twilio-Request-Id"
JSON: Final = b"application/json"

# Twilio's codes where it has one for the status; otherwise 20000 + status, as Twilio's 20404/20429/20500.
_CODES: Final = {400: 20001, 401: 20003, 403: 20003, 405: 20004, 413: 21617}

Headers = list[tuple[bytes, bytes]]


def body_too_large() -> TwilioError:
    return TwilioError(413, 21617, "Request body too large")


def body_timed_out(timeout: float) -> TwilioError:
    return TwilioError(408, 20408, f"The request body did not arrive within {timeout:g} seconds.")


def new_request_id() -> str:
    return "RQ" + uuid.uuid4().hex


def http_error(exc: HTTPException, path: str) -> TwilioError:
    """quart's HTTP error as the API's error (the same messages the hot routes give)."""
    status = exc.code or 500
    if status == 404:
        message = f"The requested resource {path} was not found"
    elif status == 405:
        message = "Method not allowed"
    elif status == 413:
        return body_too_large()
    else:
        message = exc.description or exc.name
    return TwilioError(status, _CODES.get(status, 20000 + status), message)


def loggable_path(path: str) -> str:
    """``path`` for a log line: a webhook path's secret segment and anything past it left out."""
    if path.startswith("/webhooks/"):
        parts = path.split("/", 4)  # "", "webhooks", kind, digits, rest
        if len(parts) == 5:
            return "/".join(parts[:4]) + "/..."
    return path[:200]


def internal_error(route: str, method: str, exc: BaseException) -> tuple[TwilioError, str]:
    """Log ``exc`` once with a new request id; the 500 to answer and that id.

    ``route`` is a route's rule or a ``loggable_path``: never a raw path, which may hold a secret.
    """
    request_id = new_request_id()
    log.error(
        "frontdoor.unhandled",
        request_id=request_id,
        method=method,
        route=route,
        error=type(exc).__name__,
        exc_info=exc,
    )
    error = TwilioError(500, 20500, f"Internal server error (request {request_id})")
    return error, request_id


def request_id_header(request_id: str) -> Headers:
    return [(REQUEST_ID_HEADER.lower().encode(), request_id.encode())]


class LastResort:
    """ASGI wrapper: an exception that escapes ``app`` before it answered is a JSON 500."""

    def __init__(self, app: ASGIFramework) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracked(event: ASGISendEvent) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self._app(scope, receive, tracked)
        except Exception as exc:
            error, request_id = internal_error(loggable_path(scope["path"]), scope["method"], exc)
            if started:
                raise  # half an answer is out: hypercorn closes the connection
            body = error.body()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", JSON),
                        (b"content-length", str(len(body)).encode()),
                        *request_id_header(request_id),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
