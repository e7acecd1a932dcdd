"""The peer lane's framing: whatever way the bytes are cut, the same messages come out; a length above
the limit is refused by its length alone; anything not a lane message is a FrameError."""

from __future__ import annotations

import contextlib
import itertools

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.frontdoor.lane_wire import (
    LENGTH_SIZE,
    FrameBuffer,
    FrameError,
    LaneRefused,
    LaneReply,
    LaneRequest,
    address_of,
    decode_answer,
    decode_request,
    frame,
    parse_address,
)

_bytes = st.binary(max_size=300)
_headers = st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=6)
_ids = st.integers(min_value=0, max_value=2**32 - 1)
requests = st.builds(
    LaneRequest, _ids, st.sampled_from([b"GET", b"POST", b"DELETE"]), _bytes, _headers, _bytes
)
answers = st.one_of(
    st.builds(LaneReply, _ids, st.integers(min_value=100, max_value=599), _headers, _bytes),
    st.builds(LaneRefused, _ids, st.text(max_size=30)),
)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(st.lists(requests, max_size=8), st.lists(st.integers(min_value=0), max_size=20))
def test_requests_come_out_whole_and_in_order_however_the_bytes_are_cut(
    messages: list[LaneRequest], cuts: list[int]
) -> None:
    wire = b"".join(frame(m) for m in messages)
    buffer = FrameBuffer(1 << 20)
    out: list[LaneRequest] = []
    for piece in _cut(wire, cuts):
        buffer.feed(piece)
        while (payload := buffer.next()) is not None:
            out.append(decode_request(payload))
    assert out == messages
    assert buffer.pending == 0


@given(st.lists(answers, max_size=8), st.lists(st.integers(min_value=0), max_size=20))
def test_answers_come_out_whole_and_in_order_however_the_bytes_are_cut(
    messages: list[LaneReply | LaneRefused], cuts: list[int]
) -> None:
    wire = b"".join(frame(m) for m in messages)
    buffer = FrameBuffer(1 << 20)
    out: list[LaneReply | LaneRefused] = []
    for piece in _cut(wire, cuts):
        buffer.feed(piece)
        while (payload := buffer.next()) is not None:
            out.append(decode_answer(payload))
    assert out == messages


@given(requests, st.integers(min_value=1, max_value=40))
def test_a_cut_frame_is_never_given_out(message: LaneRequest, short: int) -> None:
    data = frame(message)
    buffer = FrameBuffer(1 << 20)
    buffer.feed(data[: max(0, len(data) - short)])
    assert buffer.next() is None
    assert buffer.wanted() >= 1


def test_a_length_above_the_limit_is_refused_before_its_bytes_come() -> None:
    buffer = FrameBuffer(1000)
    buffer.feed((1001).to_bytes(LENGTH_SIZE, "big") + b"x")
    with pytest.raises(FrameError, match="1001 bytes, above the lane's 1000-byte limit"):
        buffer.next()


def test_an_http_request_on_the_lane_is_a_frame_far_above_any_limit() -> None:
    buffer = FrameBuffer(1 << 20)
    buffer.feed(b"POST /2010-04-01/Accounts HTTP/1.1\r\n")
    with pytest.raises(FrameError, match="above the lane's"):
        buffer.next()


@given(st.binary(max_size=200))
def test_garbage_is_a_frame_error_never_anything_else(payload: bytes) -> None:
    for decode in (decode_request, decode_answer):
        with contextlib.suppress(FrameError):
            decode(payload)


def test_an_answer_is_not_a_request_nor_the_other_way_round() -> None:
    reply = frame(LaneReply(1, 200, [], b""))[LENGTH_SIZE:]
    request = frame(LaneRequest(1, b"GET", b"/", [], b""))[LENGTH_SIZE:]
    with pytest.raises(FrameError, match="not a lane request"):
        decode_request(reply)
    with pytest.raises(FrameError, match="not a lane answer"):
        decode_answer(request)
    with pytest.raises(FrameError, match="not a lane request"):
        decode_request(msgspec.msgpack.encode(["q", "one", b"GET", b"/", [], b""]))


def test_addresses() -> None:
    assert parse_address("lane://127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert parse_address(address_of("::1", 7002)) == ("::1", 7002)
    assert address_of("::1", 7002) == "lane://[::1]:7002"
    for bad in ("http://127.0.0.1:80", "lane://127.0.0.1", "lane://:80", "lane://h:0", "lane://h:99999"):
        with pytest.raises(ValueError):
            parse_address(bad)
