"""The simulator's sans-IO request/response pair, shared by the core, the server and the transport."""

from __future__ import annotations

import attrs

from dispatcher.simulator.errors import ApiError

JSON = ("content-type", "application/json")


@attrs.frozen
class SimRequest:
    """One HTTP request as the simulator sees it, with no socket behind it."""

    method: str
    target: str
    """Path and query, e.g. ``/15550000001/v1/messages``."""
    headers: dict[str, str] = attrs.field(factory=dict)
    """Lower-cased names."""
    body: bytes = b""


@attrs.frozen
class SimResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((value for key, value in self.headers if key.lower() == lname), None)


def json_response(status: int, body: bytes) -> SimResponse:
    return SimResponse(status, [JSON], body)


def error_response(error: ApiError) -> SimResponse:
    return SimResponse(error.status, [JSON], error.body())
