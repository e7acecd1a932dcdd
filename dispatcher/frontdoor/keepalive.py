"""Keep hypercorn's keep-alive bookkeeping out of quart-trio's cancellation.

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

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope


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
