"""``InProcessTransport``: the actor's ``Transport`` seam served by a ``Simulator`` with no sockets.

Lets the daemon's per-number actor run against the simulator under
``MockClock`` deterministically: each request is one call to ``sim.handle``.
"""

from __future__ import annotations

from typing import final

import trio

from actors.transport import ConnectError, Headers, Response, ResponseLostError
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.exchange import SimRequest
from dispatcher.simulator.faults import Refused, Reset, ResponseDropped


@final
class InProcessTransport:
    """One number's endpoint; ``target`` is relative to it (``b"/v1/messages"``)."""

    def __init__(
        self, sim: Simulator, number: str, *, endpoint: int | None = None, cloud: bool = False
    ) -> None:
        """``cloud``: a Cloud API number, whose targets carry the whole Graph path."""
        """``endpoint`` k serves the number as endpoint k of a multiconnect set (``/digits~k``)."""
        self._sim = sim
        self._prefix = (
            "" if cloud else sim.endpoint_path(number) + ("" if endpoint is None else f"~{endpoint}")
        )
        self._closed = False

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        """Answer through the simulator; a checkpoint, like any network call.

        Raises:
            ConnectError: after ``aclose()``, or an injected refusal.
            ResponseLostError: an injected reset or dropped answer.
        """
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise ConnectError("transport is closed")
        req = SimRequest(
            method=method.decode("ascii"),
            target=self._prefix + target.decode("latin-1"),
            headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers},
            body=body,
        )
        try:
            resp = await self._sim.handle(req)
        except Refused as exc:
            raise ConnectError(str(exc)) from exc
        except (Reset, ResponseDropped) as exc:
            raise ResponseLostError(str(exc)) from exc
        return Response(
            status=resp.status,
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in resp.headers],
            body=resp.body,
        )

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()
