"""A customer's callback endpoint for tests: a real HTTP server on 127.0.0.1:0 (hypercorn, raw ASGI).

Records every request (URL, headers, form pairs) and answers what ``respond``
says; ``fail_first`` answers 503 to the first N requests. ``arrived`` lists
requests as they come in, ``hits`` as they are answered; ``in_flight`` counts
requests being answered (``peak_in_flight`` its highest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import attrs
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from twilio.request_validator import RequestValidator


@attrs.frozen
class Hit:
    path: str
    url: str  # as the sender signed it: our base URL + path (+ query)
    headers: dict[str, str]
    params: list[tuple[str, str]]
    status: int  # what we answered

    @property
    def form(self) -> dict[str, str]:
        return dict(self.params)

    def signed_by(self, auth_token: str) -> bool:
        signature = self.headers.get("x-twilio-signature", "")
        return bool(RequestValidator(auth_token).validate(self.url, self.form, signature))


Responder = Callable[[Hit], Awaitable[tuple[int, bytes]]]

FAST_CALLBACKS = """
[callbacks]
allow_private = ["127.0.0.1/32"]
poll_interval = 0.05
backoff_initial = 0.02
backoff_max = 0.2
"""
"""A daemon's ``[callbacks]`` for tests with a sink on 127.0.0.1: private address allowed, quick retries."""


async def ok(_: Hit) -> tuple[int, bytes]:
    return 200, b""


@attrs.define(eq=False)
class Sink:
    url: str = ""
    hits: list[Hit] = attrs.Factory(list)
    arrived: list[Hit] = attrs.Factory(list)
    in_flight: int = 0
    peak_in_flight: int = 0
    respond: Responder = ok
    fail_first: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)

    def delivered(self, path: str | None = None) -> list[Hit]:
        return [h for h in self.hits if 200 <= h.status < 300 and (path is None or h.path == path)]

    def failed(self) -> list[Hit]:
        return [h for h in self.hits if h.status >= 300]

    async def wait_for(self, predicate: Callable[[Sink], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not predicate(self):
                self.changed = trio.Event()
                await self.changed.wait()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        path = scope["path"]
        url = self.url + path + (f"?{query}" if query else "")
        params = parse_qsl(body.decode(), keep_blank_values=True)
        probe = Hit(path, url, headers, params, 0)
        self.arrived.append(probe)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.changed.set()
        try:
            if len(self.hits) < self.fail_first:
                status, answer = 503, b"try later"
            else:
                status, answer = await self.respond(probe)
        finally:
            self.in_flight -= 1
        self.hits.append(attrs.evolve(probe, status=status))
        self.changed.set()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/xml"), (b"content-length", b"%d" % len(answer))],
            }
        )
        await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def open_sink(**kwargs: Any) -> AsyncIterator[Sink]:
    sink = Sink(**kwargs)
    stop = trio.Event()
    cfg = HyperConfig()
    cfg.bind = ["127.0.0.1:0"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(sink.app, cfg, shutdown_trigger=stop.wait, task_status=task_status)
        )  # type: ignore[arg-type]
        sink.url = binds[0]
        try:
            yield sink
        finally:
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 2.0
