"""Keep-alive done right: hypercorn's bookkeeping out of quart-trio's cancellation,
and a connection whose request body was not read announced as closing.

quart-trio runs a request as two tasks in one nursery and cancels that nursery
as soon as either ends. The last ``send`` of a response runs hypercorn's
connection recycling inline: it starts the connection's idle timer, which is a
checkpoint. When the ``http.disconnect`` that hypercorn queues at the end of the
stream wakes quart-trio's message task first, the cancel lands on that
checkpoint and the keep-alive connection is left idle with no idle timer: it
never times out (``keep_alive_timeout``), and a graceful shutdown waits the full
``graceful_timeout`` for it (seen as a 5 s stop after WhatsApp's or the
simulator's webhook connections had been used).

Shielding the final body event lets hypercorn finish its own bookkeeping. It
cannot hang on a slow client: hypercorn already shields its socket writes, and
bounds them by its own timeouts.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)


class ShieldFinalSend:
    """ASGI wrapper: the event that ends an HTTP response is sent under a shield."""

    def __init__(self, app: ASGIFramework) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def shielded_send(event: ASGISendEvent) -> None:
            if event["type"] == "http.response.body" and not event.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(event)
            else:
                await send(event)

        await self._app(scope, receive, shielded_send)


class CloseUnreadBody:
    """ASGI wrapper: an answer sent before the request's body was read says ``Connection: close``.

    The front door answers a refused credential, a too-large body or a body that
    took too long without reading (the rest of) the body. hypercorn cannot reuse
    such a connection and closes it after the answer; without the header a
    keep-alive client (httpx, the twilio SDK) may already have sent its next
    request on it and sees "server disconnected" instead of an answer. Requests
    without a body (GET, DELETE) pass straight through.
    """

    def __init__(self, app: ASGIFramework) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or not _has_body(scope["headers"]):
            await self._app(scope, receive, send)
            return
        read_all = False

        async def tracked_receive() -> ASGIReceiveEvent:
            nonlocal read_all
            event = await receive()
            if event["type"] != "http.request" or not event.get("more_body", False):
                read_all = True
            return event

        async def closing_send(event: ASGISendEvent) -> None:
            if event["type"] == "http.response.start" and not read_all:
                headers = list(event.get("headers", ()))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    event = {**event, "headers": [*headers, (b"connection", b"close")]}
            await send(event)

        await self._app(scope, tracked_receive, closing_send)


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (lowered == b"content-length" and value.strip() != b"0"):
            return True
    return False
