"""The forwarder's end of the peer lane: many requests in flight on one connection to a peer.

One ``LaneClient`` per peer lane address holds one TCP connection (opened on first
use, opened again when it broke or its peer restarted). Each request gets an id,
is written as one frame (``lane_writer``: the frames of concurrent requests go
out in one send) and waits for the answer with that id. There is no reader task:
one of the waiters reads, hands each answer to its waiter (waking that one task)
until its own came, then passes the reading on to a waiter still without an
answer. So an idle connection costs no task, and a waiter cancelled while reading
loses nothing (the bytes read so far stay in the buffer; the next reads on).

What a failure means, as ``actors.transport``'s error tree says it:

- ``ConnectError``: the request was not applied. No connection; the frame was not
  written whole (the peer never decodes a cut frame); the answer is ``LaneRefused``
  (the peer is closing); more than ``max_request`` bytes; or no room within the timeout.
- ``ResponseLostError``: the frame was written and the connection broke (EOF,
  reset, a garbage or oversized answer) before its answer came: it may have been applied.
- ``RequestTimeout``: written, and no answer within ``request_timeout``: ambiguous.
"""

from __future__ import annotations

import os
import select
from typing import Final, final

import trio

from actors.transport import ConnectError, Headers, RequestTimeout, Response, ResponseLostError
from dispatcher.frontdoor.lane_wire import (
    HEAD_ALLOWANCE,
    PREFACE,
    RECEIVE_SIZE,
    FrameBuffer,
    FrameError,
    LaneAnswer,
    LaneRefused,
    LaneRequest,
    decode_answer,
    frame,
    parse_address,
    receive_frame,
)
from dispatcher.frontdoor.lane_writer import FrameWriter, Ticket

MAX_IN_FLIGHT: Final = 256
_BROKEN: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, FrameError)


@final
class _Connection:
    """One connected lane: frames out under a write lock, answers in by whoever reads next."""

    def __init__(
        self, stream: trio.SocketStream, *, max_in_flight: int, max_response: int, send_timeout: float
    ) -> None:
        self._stream = stream
        self._writer = FrameWriter(stream, send_timeout=send_timeout)
        self._fd = stream.socket.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._frames = FrameBuffer(max_response + HEAD_ALLOWANCE)
        self.slots = trio.Semaphore(max_in_flight)
        self._next_id = 0
        self._waiting: dict[int, _Waiter] = {}
        self._reading = False  # one of the waiters reads for all
        self.broken: BaseException | None = None  # why it is beyond use
        self.closing = False  # its peer refused a request: it is shutting down

    @property
    def usable(self) -> bool:
        """Fit for a new request: not broken and its peer not closing. An idle connection is
        looked at first: EOF there is a peer that closed it (a restart); a late answer to a
        request that timed out is read and dropped."""
        if self.broken is None and not self.closing and not self._waiting:
            self._read_idle()
        return self.broken is None and not self.closing

    def _read_idle(self) -> None:
        """What an idle connection has to read, read now without blocking (nobody else reads)."""
        while self._poll.poll(0):
            try:
                data = os.read(self._fd, RECEIVE_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(exc)
                return
            if not data:
                self.fail(ConnectionResetError("closed by the peer while idle"))
                return
            self._frames.feed(data)
            try:
                while (payload := self._frames.next()) is not None:
                    if isinstance(decode_answer(payload), LaneRefused):
                        self.closing = True
            except FrameError as exc:
                self.fail(exc)
                return

    def expect(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        self._waiting[self._next_id] = _Waiter()
        return self._next_id

    def forget(self, request_id: int) -> None:
        waiter = self._waiting.pop(request_id, None)
        if waiter is not None and waiter.answer is None and not self._reading:
            self._hand_over()  # it gave up (timed out, cancelled), maybe when the reading was its turn
        if self.closing and not self._waiting:
            self.fail(ConnectionResetError("its peer is closing"))

    async def write(self, ticket: Ticket) -> None:
        """The frame, whole (with the others queued meanwhile); raising means it was not written
        whole unless ``ticket.whole`` says otherwise (a cancelled caller whose frame another's
        send carried). A cut frame or a broken socket leaves the connection beyond use."""
        if self.broken is not None:
            raise trio.ClosedResourceError("the lane connection broke")
        try:
            await self._writer.write(ticket)
        finally:
            if self._writer.broken is not None:
                self.fail(self._writer.broken)

    async def answer(self, request_id: int) -> LaneAnswer:
        """The answer to ``request_id``: handed over by the waiter reading, or read here."""
        me = self._waiting[request_id]
        while me.answer is None:
            if self.broken is not None:
                raise trio.BrokenResourceError(f"the lane connection broke: {self.broken!r}")
            if self._reading:
                await me.woken.wait()
                me.woken = trio.Event()
                continue
            self._reading = True
            try:
                while me.answer is None:
                    got = decode_answer(await self._next_frame())
                    if isinstance(got, LaneRefused):
                        self.closing = True  # no new request on it; those in flight are answered
                    waiter = self._waiting.get(got.id)
                    if waiter is not None:  # else its request gave up (timed out): dropped
                        waiter.answer = got
                        waiter.woken.set()
            except _BROKEN as exc:
                self.fail(exc)
                raise
            finally:
                self._reading = False
                self._hand_over()
        return me.answer

    def _hand_over(self) -> None:
        """The reading passes to a waiter still without its answer."""
        for waiter in self._waiting.values():
            if waiter.answer is None:
                waiter.woken.set()
                return

    async def _next_frame(self) -> bytes:
        payload = await receive_frame(self._stream, self._frames)
        if payload is None:
            raise trio.BrokenResourceError("the peer closed the lane")
        return payload

    def fail(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = exc
            self._writer.fail(exc)  # closes the socket: wakes a reader blocked on it
            for waiter in self._waiting.values():
                waiter.woken.set()  # each sees it broke


@final
class _Waiter:
    """A request waiting on a connection: its answer once read, and the event that wakes it
    (its answer came, the reading is its turn, or the connection broke)."""

    __slots__ = ("answer", "woken")

    def __init__(self) -> None:
        self.answer: LaneAnswer | None = None
        self.woken = trio.Event()


@final
class LaneClient:
    """Requests to one peer over its lane (``lane://host:port``); see the module's docstring."""

    def __init__(
        self,
        address: str,
        *,
        request_timeout: float = 30.0,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_request: int,
        max_response: int,
    ) -> None:
        self._address = address
        self._host, self._port = parse_address(address)
        self._timeout = request_timeout
        self._max_in_flight = max_in_flight
        self._max_request = max_request + HEAD_ALLOWANCE
        self._max_response = max_response
        self._connection: _Connection | None = None
        self._connecting = trio.Lock()
        self._closed = False
        self.connects = 0  # connections opened (a peer restart shows as one more)

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        """One request; raises as the module's docstring says."""
        if self._closed:
            raise ConnectError(f"the lane to {self._address} is closed")
        ticket: Ticket | None = None
        with trio.move_on_after(self._timeout) as deadline:
            try:
                connection = await self._connected()
                async with connection.slots:
                    request_id = connection.expect()
                    try:
                        data = frame(LaneRequest(request_id, method, target, headers, body))
                        if len(data) > self._max_request:
                            raise ConnectError(
                                f"a request of {len(data)} bytes is above the lane's {self._max_request}"
                            )
                        ticket = Ticket(data)
                        await connection.write(ticket)
                        answer = await connection.answer(request_id)
                    finally:
                        connection.forget(request_id)
            except _BROKEN as exc:
                if ticket is not None and ticket.whole:
                    raise ResponseLostError(f"the lane to {self._address} broke: {exc!r}") from exc
                raise ConnectError(f"cannot reach the lane at {self._address}: {exc!r}") from exc
        if deadline.cancelled_caught:
            if ticket is not None and ticket.whole:
                raise RequestTimeout(f"no answer over the lane to {self._address} within {self._timeout}s")
            raise ConnectError(f"no room on the lane to {self._address} within {self._timeout}s")
        if isinstance(answer, LaneRefused):
            raise ConnectError(f"the peer at {self._address} refused the request: {answer.reason}")
        return Response(answer.status, answer.headers, answer.body)

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        async with self._connecting:
            connection = self._connection
            if connection is not None and connection.usable:
                return connection
            if self._closed:
                raise trio.ClosedResourceError("closed")
            stream = await trio.open_tcp_stream(self._host, self._port)
            try:
                await stream.send_all(PREFACE)
            except BaseException:
                stream.socket.close()
                raise
            self.connects += 1
            connection = _Connection(
                stream,
                max_in_flight=self._max_in_flight,
                max_response=self._max_response,
                send_timeout=self._timeout,
            )
            self._connection = connection  # one given up is closed by its last waiter (``forget``)
            return connection

    async def aclose(self) -> None:
        """Closes the connection: requests waiting on it end with ``ResponseLostError``."""
        self._closed = True
        if self._connection is not None:
            self._connection.fail(trio.ClosedResourceError("the lane client was closed"))
            self._connection = None
        await trio.lowlevel.checkpoint()
