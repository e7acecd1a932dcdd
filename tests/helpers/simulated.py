"""The simulator in process, for MockClock tests of actors (no sockets)."""

from __future__ import annotations

import trio

from actors.multiconnect import MultiEndpoint
from actors.transport import Headers, Response
from dispatcher.core.clock import TrioWallClock
from dispatcher.simulator.config import SimNumber
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.configs import NUMBER

DAY = 86_400.0
PASSWORD = "Passw0rd!"  # the password of tests.helpers.configs' numbers


def sim_with(wall: TrioWallClock, *numbers: str) -> Simulator:
    """A simulator serving On-Prem ``numbers`` on ``wall``'s clock; statuses only when a test asks."""
    return Simulator(
        [SimNumber(number=n, password=PASSWORD) for n in numbers], wall_clock=wall, status_delays=None
    )


class Timed:
    """Wraps a transport, recording the trio time of every message send.

    ``fail_next``: an exception the next send raises instead of reaching ``inner`` (once).
    """

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.sends: list[float] = []
        self.fail_next: Exception | None = None

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        if target == b"/v1/messages":
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            self.sends.append(trio.current_time())
        return await self.inner.request(method, target, headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def multi(sim: Simulator, count: int = 3, *, number: str = NUMBER, **kwargs: float) -> MultiEndpoint:
    """``number`` at ``count`` endpoints of ``sim`` (``sim/DIGITS~k``, k from 0) behind one MultiEndpoint."""
    digits = number.lstrip("+")
    endpoints = [(f"sim/{digits}~{k}", InProcessTransport(sim, number, endpoint=k)) for k in range(count)]
    return MultiEndpoint(endpoints, **kwargs)  # type: ignore[arg-type]
