"""The peer lane's wire format: length-prefixed msgpack frames, cut out of the bytes without I/O.

A lane connection starts with ``PREFACE`` from the client (a port that is not a
lane, or a client that is not a daemon, is told apart at once). Then each side
writes frames: a 4-byte big-endian length, then that many bytes of msgpack, one
message each. The client writes ``LaneRequest``; the server answers each one, in
any order, with a ``LaneReply`` (the app's answer) or a ``LaneRefused`` (the app
never saw it: the server is closing), matched by ``id``. A message is an array
whose first element is its tag, so a frame costs a few bytes beyond its body.

``FrameBuffer`` cuts frames out of whatever the socket gave, and refuses a length
above its limit before any of the frame is kept; anything that is not a frame of
the expected kinds raises ``FrameError``: the connection is then beyond repair
and is closed. ``receive_frame`` is the one piece here that reads a socket.
"""

from __future__ import annotations

from typing import Final, final

import msgspec
import trio

PREFACE: Final = b"WDLANE1\n"
SCHEME: Final = "lane://"
LENGTH_SIZE: Final = 4
RECEIVE_SIZE: Final = 65536
# Room for a message's method, target, headers and framing around its body.
HEAD_ALLOWANCE: Final = 64 << 10

Headers = list[tuple[bytes, bytes]]


class LaneRequest(msgspec.Struct, tag="q", array_like=True, frozen=True):
    id: int
    method: bytes
    target: bytes
    headers: Headers
    body: bytes


class LaneReply(msgspec.Struct, tag="a", array_like=True, frozen=True):
    id: int
    status: int
    headers: Headers
    body: bytes


class LaneRefused(msgspec.Struct, tag="r", array_like=True, frozen=True):
    """The request was not handed to the app (nothing applied); ``reason`` says why."""

    id: int
    reason: str


LaneAnswer = LaneReply | LaneRefused


class FrameError(Exception):
    """Not a frame of the lane (too large, cut short, or not the expected message)."""


_encoder: Final = msgspec.msgpack.Encoder()
_request_decoder: Final = msgspec.msgpack.Decoder(LaneRequest)
_answer_decoder: Final[msgspec.msgpack.Decoder[LaneAnswer]] = msgspec.msgpack.Decoder(LaneAnswer)


def frame(message: LaneRequest | LaneReply | LaneRefused) -> bytes:
    """``message`` as one frame, its length first."""
    payload = _encoder.encode(message)
    return len(payload).to_bytes(LENGTH_SIZE, "big") + payload


def decode_request(payload: bytes) -> LaneRequest:
    try:
        return _request_decoder.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise FrameError(f"not a lane request: {exc}") from None


def decode_answer(payload: bytes) -> LaneAnswer:
    try:
        return _answer_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise FrameError(f"not a lane answer: {exc}") from None


def parse_address(address: str) -> tuple[str, int]:
    """``lane://host:port`` (``[v6]`` in brackets) as (host, port); ValueError otherwise."""
    if not address.startswith(SCHEME):
        raise ValueError(f"not a lane address: {address!r}")
    host, sep, port = address[len(SCHEME) :].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected lane://HOST:PORT, got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def address_of(host: str, port: int) -> str:
    return f"{SCHEME}[{host}]:{port}" if ":" in host else f"{SCHEME}{host}:{port}"


@final
class FrameBuffer:
    """Bytes in, whole frames out; a frame longer than ``max_frame`` is refused by its length."""

    def __init__(self, max_frame: int) -> None:
        self._max = max_frame
        self._data = bytearray()
        self._start = 0  # bytes before it are consumed (compacted once they are half the buffer)

    def feed(self, data: bytes) -> None:
        self._data += data

    @property
    def pending(self) -> int:
        """Bytes held that are not a whole frame yet (0 at a frame boundary)."""
        return len(self._data) - self._start

    def wanted(self) -> int:
        """How many more bytes complete the frame being read (at least 1)."""
        have = self.pending
        if have < LENGTH_SIZE:
            return LENGTH_SIZE - have
        return max(1, LENGTH_SIZE + self._length() - have)

    def next(self) -> bytes | None:
        """The next whole frame's payload, or None until more bytes come."""
        if self.pending < LENGTH_SIZE:
            return None
        length = self._length()
        end = self._start + LENGTH_SIZE + length
        if end > len(self._data):
            return None
        payload = bytes(self._data[self._start + LENGTH_SIZE : end])
        self._start = end
        if self._start == len(self._data):
            self._data.clear()
            self._start = 0
        elif self._start > len(self._data) // 2:
            del self._data[: self._start]
            self._start = 0
        return payload

    def _length(self) -> int:
        length = int.from_bytes(self._data[self._start : self._start + LENGTH_SIZE], "big")
        if length > self._max:
            raise FrameError(f"a frame of {length} bytes, above the lane's {self._max}-byte limit")
        return length


async def receive_frame(stream: trio.SocketStream, frames: FrameBuffer) -> bytes | None:
    """The next frame's payload, reading ``stream`` into ``frames`` as needed; None when the peer
    closed between two frames (``FrameError`` when it closed in the middle of one)."""
    while True:
        payload = frames.next()
        if payload is not None:
            return payload
        data = await stream.receive_some(max(RECEIVE_SIZE, frames.wanted()))
        if not data:
            if frames.pending:
                raise FrameError(f"connection closed {frames.pending} bytes into a frame")
            return None
        frames.feed(data)
