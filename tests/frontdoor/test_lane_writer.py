"""The lane's frame writer over a real socket pair: frames queued together go out in one send, each
whole (in the order their writers ran: answers carry their ids); each frame's fate is known (whole,
or not written at all); a send that cannot finish breaks the connection."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from dispatcher.frontdoor.lane_writer import FrameWriter, Ticket


@pytest.fixture
def pair() -> Iterator[tuple[trio.SocketStream, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    try:
        yield stream, theirs
    finally:
        ours.close()
        theirs.close()


def _read_all(sock: socket.socket, size: int) -> bytes:
    data = b""
    sock.settimeout(5)
    while len(data) < size:
        data += sock.recv(65536)
    return data


async def test_frames_queued_together_go_out_in_one_send_each_whole(
    pair: tuple[trio.SocketStream, socket.socket],
) -> None:
    stream, theirs = pair
    writer = FrameWriter(stream, send_timeout=5.0)
    tickets = [Ticket(f"<frame {i}>".encode()) for i in range(20)]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for ticket in tickets:
                nursery.start_soon(writer.write, ticket)
    assert all(t.whole for t in tickets)
    assert writer.sends == 1
    size = sum(len(t.data) for t in tickets)
    got = _read_all(theirs, size).replace(b"><", b">\n<").split(b"\n")
    assert sorted(got) == sorted(t.data for t in tickets)  # (in the order trio ran the writers)


async def test_writers_cancelled_at_any_point_know_whether_their_frame_went(
    pair: tuple[trio.SocketStream, socket.socket],
) -> None:
    """A writer cancelled while another's send carries its frame learns it was written (``whole``);
    one cancelled before a send took it wrote nothing: what the peer got is exactly the whole ones."""
    stream, theirs = pair
    writer = FrameWriter(stream, send_timeout=5.0)
    tickets = [Ticket(f"<{i:04d}{'.' * (i * 37 % 3000)}>".encode()) for i in range(200)]

    scopes: list[trio.CancelScope] = []

    async def write(ticket: Ticket) -> None:
        with trio.CancelScope() as mine:
            scopes.append(mine)
            await writer.write(ticket)

    async def canceller() -> None:  # every third writer cancelled, wherever it is by then
        for round_ in range(400):
            await trio.lowlevel.checkpoint()
            if scopes and round_ % 3 == 0:
                scopes.pop(0).cancel()

    async def drain() -> bytes:
        data = b""
        theirs.setblocking(False)
        while True:
            try:
                chunk = theirs.recv(1 << 20)
            except BlockingIOError:
                if done.is_set():
                    return data
                await trio.sleep(0.001)
                continue
            data += chunk

    done = trio.Event()
    received: list[bytes] = []

    async def reader() -> None:
        received.append(await drain())

    with trio.fail_after(20):
        async with trio.open_nursery() as outer:
            outer.start_soon(reader)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(canceller)
                for ticket in tickets:
                    nursery.start_soon(write, ticket)
            await trio.sleep(0.2)
            done.set()
    frames = received[0].replace(b"><", b">\n<").split(b"\n") if received[0] else []
    assert sorted(frames) == sorted(t.data for t in tickets if t.whole)
    assert any(t.whole for t in tickets) and writer.broken is None
    assert all(t.taken for t in tickets if t.whole)


async def test_a_writer_cancelled_before_its_turn_sends_nothing(
    pair: tuple[trio.SocketStream, socket.socket],
) -> None:
    stream, theirs = pair
    writer = FrameWriter(stream, send_timeout=5.0)
    never = Ticket(b"never")
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.write(never)
    assert not never.taken and not never.whole
    await writer.write(Ticket(b"after"))
    assert _read_all(theirs, 5) == b"after" and writer.broken is None


async def test_a_send_the_peer_never_takes_breaks_the_connection_and_no_frame_counts_as_written(
    pair: tuple[trio.SocketStream, socket.socket],
) -> None:
    stream, _ = pair  # the peer reads nothing
    writer = FrameWriter(stream, send_timeout=0.3)
    big = Ticket(b"x" * (8 << 20))
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError, match="did not finish"):
        await writer.write(big)
    assert big.taken and not big.whole and writer.broken is not None
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
        await writer.write(Ticket(b"later"))
