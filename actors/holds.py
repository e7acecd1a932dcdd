"""SendHolds: keep a number's actor from starting a send while a cancel for it commits.

A cancel is a durable write; between deciding to cancel and the commit, the
actor could pick the message up and send it. The gateway takes a hold on the
sid first (refused if the send has already started); the actor waits for held
sids before sending, then sends only if the outbox entry is still there (a
committed cancel removed it). Everything here runs on the trio thread, so check-and-hold is
atomic without locks.
"""

from __future__ import annotations

from typing import final

import trio


@final
class SendHolds:
    __slots__ = ("_held", "_sending")

    def __init__(self) -> None:
        self._held: dict[str, tuple[trio.Event, int]] = {}
        self._sending: set[str] | None = None  # made by the first send (an idle number has none)

    def try_hold(self, sid: str) -> bool:
        """Hold ``sid`` off the wire; False if its send has already started."""
        if self._sending is not None and sid in self._sending:
            return False
        event, count = self._held.get(sid, (trio.Event(), 0))
        self._held[sid] = (event, count + 1)
        return True

    def release(self, sid: str) -> None:
        held = self._held.get(sid)
        if held is None:
            return
        event, count = held
        if count > 1:
            self._held[sid] = (event, count - 1)
        else:
            del self._held[sid]
            event.set()

    async def begin_send(self, sid: str) -> None:
        """Wait out any hold, then mark ``sid`` as sending."""
        while (held := self._held.get(sid)) is not None:
            await held[0].wait()
        sending = self._sending
        if sending is None:
            sending = self._sending = set()
        sending.add(sid)

    def end_send(self, sid: str) -> None:
        if self._sending is not None:
            self._sending.discard(sid)

    def sending(self, sid: str) -> bool:
        return self._sending is not None and sid in self._sending
