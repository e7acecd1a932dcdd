"""A scriptable fake WhatsApp endpoint implementing the Transport protocol (no sockets)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import trio

from actors.transport import ConnectError, Headers, Response, TransportError

Script = Callable[[dict[str, object], int], "Response | TransportError | None"]


def ok(wamid: str) -> Response:
    return Response(201, [], json.dumps({"messages": [{"id": wamid}], "meta": {}}).encode())


def error(status: int, code: int, title: str = "", headers: Headers | None = None) -> Response:
    body = json.dumps({"errors": [{"code": code, "title": title}], "meta": {}}).encode()
    return Response(status, headers or [], body)


class FakeApi:
    """Answers logins with a 7-day token and sends with ok() unless ``script`` says otherwise.

    ``script(body, attempt_no)`` may return a Response, raise-worthy TransportError, or None.
    """

    def __init__(self, wall_now: Callable[[], float], *, latency: float = 0.0) -> None:
        self.wall_now = wall_now
        self.latency = latency
        self.sent: list[tuple[float, str, str]] = []  # (trio time, to, body)
        self.attempts: list[dict[str, object]] = []
        self.logins = 0
        self.token = "t0"
        self.script: Script | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        if target == b"/v1/users/login":
            self.logins += 1
            self.token = f"t{self.logins}"
            when = dt.datetime.fromtimestamp(self.wall_now() + 7 * 86400, dt.UTC)
            payload = {
                "users": [{"token": self.token, "expires_after": when.strftime("%Y-%m-%d %H:%M:%S+00:00")}]
            }
            return Response(200, [], json.dumps(payload).encode())
        auth = dict(headers).get(b"authorization", b"")
        if auth != b"Bearer " + self.token.encode():
            return error(401, 1005, "Access denied")
        msg = json.loads(body)
        self.attempts.append(msg)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await trio.sleep(self.latency)
            if self.script is not None:
                scripted = self.script(msg, len(self.attempts))
                if isinstance(scripted, TransportError):
                    raise scripted
                if scripted is not None:
                    return scripted
            self.sent.append((trio.current_time(), msg["to"], msg["text"]["body"]))
            return ok(f"wamid{len(self.sent)}")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


__all__ = ["ConnectError", "FakeApi", "error", "ok"]
