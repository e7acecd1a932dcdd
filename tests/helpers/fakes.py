"""Scriptable fake WhatsApp endpoints implementing the Transport protocol (no sockets):
``FakeApi`` for On-Prem, ``FakeGraph`` for the Cloud API."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import trio

from actors.transport import ConnectError, Headers, Response, TransportError
from tests.helpers.configs import PNID

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


def graph_error(code: int, status: int = 400) -> Response:
    """A Graph API error answer with Meta's ``code``."""
    body = {"error": {"message": f"(#{code})", "code": code, "fbtrace_id": "trace"}}
    return Response(status, [], json.dumps(body).encode())


class FakeGraph:
    """Answers ``POST /v23.0/PNID/messages`` with a wamid, and 190 to a token other than ``token``;
    ``script(to, attempt_no)`` may answer instead."""

    def __init__(self) -> None:
        self.token = "EAAgood"
        self.sent: list[tuple[float, str]] = []
        self.attempts: list[tuple[float, str]] = []
        self.script: Callable[[str, int], Response | None] | None = None

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        await trio.lowlevel.checkpoint()
        assert target == f"/v23.0/{PNID}/messages".encode()
        if dict(headers)[b"authorization"] != b"Bearer " + self.token.encode():
            return graph_error(190, 401)
        to = json.loads(body)["to"]
        self.attempts.append((trio.current_time(), to))
        if self.script is not None:
            scripted = self.script(to, len(self.attempts))
            if scripted is not None:
                return scripted
        self.sent.append((trio.current_time(), to))
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": f"wamid.{len(self.sent)}"}],
        }
        return Response(200, [], json.dumps(answer).encode())

    async def aclose(self) -> None:
        pass


__all__ = ["ConnectError", "FakeApi", "FakeGraph", "error", "graph_error", "ok"]
