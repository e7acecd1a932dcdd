"""On-Premises API errors as exceptions that know their HTTP response.

Handlers raise ``ApiError``; ``Simulator.handle`` turns it into the real error
shape ``{"errors":[{"code","title","details"}],"meta":{...}}`` and counts it.
The codes and titles are Meta's (reference section 1.9).
"""

from __future__ import annotations

from typing import final

from dispatcher.simulator.wire import ErrorBody, ErrorItem, encode

ACCESS_DENIED = 1005
NOT_FOUND = 1006
MISSING_PARAMETER = 1008
INVALID_PARAMETER = 1009
USER_NOT_VALID = 1013
INTERNAL_ERROR = 1014
TOO_MANY_REQUESTS = 1015
WEBHOOK_NOT_CONFIGURED = 1022
INVALID_REQUEST = 1025
MESSAGE_TOO_LONG = 1001

TITLES = {
    MESSAGE_TOO_LONG: "Message too long",
    ACCESS_DENIED: "Access denied",
    NOT_FOUND: "Resource not found",
    MISSING_PARAMETER: "Required parameter is missing",
    INVALID_PARAMETER: "Parameter value is not valid",
    USER_NOT_VALID: "User is not valid",
    INTERNAL_ERROR: "Internal error",
    TOO_MANY_REQUESTS: "Too many requests",
    WEBHOOK_NOT_CONFIGURED: "Webhooks URL is not configured",
    INVALID_REQUEST: "Invalid request",
}


@final
class ApiError(Exception):
    """An error response: HTTP ``status`` and one ``errors[]`` entry."""

    def __init__(self, status: int, code: int, details: str = "") -> None:
        super().__init__(f"HTTP {status}, code {code}: {details}")
        self.status = status
        self.code = code
        self.details = details

    def body(self) -> bytes:
        return error_body(self.code, self.details)


def error_body(code: int, details: str = "") -> bytes:
    """The JSON error envelope for ``code``."""
    return encode(ErrorBody(errors=[ErrorItem(code=code, title=TITLES[code], details=details)]))


def unauthorized() -> ApiError:
    """Missing, malformed, unknown, expired or revoked token; or bad login credentials."""
    return ApiError(401, ACCESS_DENIED, "Invalid credentials.")


def missing(details: str) -> ApiError:
    return ApiError(400, MISSING_PARAMETER, details)


def invalid(details: str) -> ApiError:
    return ApiError(400, INVALID_PARAMETER, details)


def bad_request(details: str) -> ApiError:
    return ApiError(400, INVALID_REQUEST, details)


def not_found(details: str) -> ApiError:
    return ApiError(404, NOT_FOUND, details)
