"""Frames out on a lane connection: the frames of concurrent requests go out in one send.

A send on a TCP socket costs a system call whatever it carries (on loopback, most of a
forwarded request's cost at this end). Each writer queues its frame; the first to get the
writer's turn lets the other ready tasks queue theirs (one scheduler pass) and sends all
that are queued at once. Each frame's fate is kept (``Ticket``): a frame sent whole was
written, one cut off or never sent was not, which is what the lane client tells its caller
(``ConnectError``: nothing applied) apart from a lost answer.

A send, once started, finishes even if its task is cancelled (it carries the others'
frames): within ``send_timeout``, after which the connection is beyond use (``broken``).
"""

from __future__ import annotations

from typing import final

import trio


@final
class Ticket:
    """One queued frame: ``taken`` once a send holds it, ``whole`` once all of it was sent."""

    __slots__ = ("data", "taken", "whole")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.taken = False
        self.whole = False


@final
class FrameWriter:
    """Batched, whole-frame writes to ``stream``; see the module's docstring."""

    def __init__(self, stream: trio.SocketStream, *, send_timeout: float) -> None:
        self._socket = stream.socket
        self._send_timeout = send_timeout
        self._queue: list[Ticket] = []
        self._turn = trio.Lock()
        self.broken: BaseException | None = None
        self.sends = 0  # system calls' worth of sends, for the tests and the bench

    async def write(self, ticket: Ticket) -> None:
        """Send ``ticket``'s frame (with whatever else is queued by then). Returns once it was
        sent whole; raises otherwise (``ticket.whole`` tells, even when the caller was cancelled
        while another task's send carried it)."""
        self._queue.append(ticket)
        try:
            async with self._turn:
                if not ticket.taken:
                    await trio.lowlevel.checkpoint()  # the other ready writers queue theirs
                    await self._send_queued()
        except BaseException:
            if not ticket.taken:
                self._queue.remove(ticket)  # never sent: it is not written
            raise
        if not ticket.whole:
            raise trio.BrokenResourceError(f"the lane connection broke: {self.broken!r}")

    async def _send_queued(self) -> None:
        batch, self._queue = self._queue, []
        for ticket in batch:
            ticket.taken = True
        if self.broken is not None:
            return
        data = batch[0].data if len(batch) == 1 else b"".join(t.data for t in batch)
        view = memoryview(data)
        sent = 0
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self._send_timeout):
            try:
                while sent < len(data):
                    sent += await self._socket.send(view[sent:])
                    self.sends += 1
            except (OSError, trio.ClosedResourceError) as exc:
                self.fail(exc)
        if sent < len(data) and self.broken is None:
            self.fail(TimeoutError(f"a send of {len(data)} bytes did not finish in {self._send_timeout}s"))
        end = 0
        for ticket in batch:
            end += len(ticket.data)
            ticket.whole = end <= sent

    def fail(self, exc: BaseException) -> None:
        """Beyond use: a frame may be cut, or the socket is gone."""
        if self.broken is None:
            self.broken = exc
            self._socket.close()
