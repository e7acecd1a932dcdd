"""Inbound media downloads: WhatsApp's size limit for each kind, and how many run at once.

The front door relays a customer's file from the number's API to the client as
it arrives (``actors.transport.BodyStream``), never holding it whole; one
download through the front door once grew the daemon to 9.7 GB. What bounds one:

- its size: the limit of its kind in Meta's supported-media table, which holds
  "when sending or receiving a media message" (audio and video 16 MB, images
  5 MB, stickers 500 KB animated, documents 100 MB; Meta's Cloud API reference,
  as copied in AWS End User Messaging's "Supported media file types and sizes in
  WhatsApp"). The kind is the message's (a voice note is audio); not its content
  type, since any file may come as a document. A larger Content-Length is
  refused before the body is read, and the body is counted while it streams,
  since a Content-Length may be missing or wrong;
- its time: one deadline from the request to the last byte relayed;
- how many: per number and in all. A download beyond either limit is refused
  at once (429), never queued behind the others.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Final, final

import structlog

from actors.transport import BodyStream

__all__ = ["MAX_BYTES", "DownloadSlots", "Relay", "Slot", "limit_for"]

log = structlog.get_logger()

_MB: Final = 1 << 20  # Meta's "MB" read as MiB: a file at its kind's limit is never refused
MAX_BYTES: Final[dict[str, int]] = {
    "audio": 16 * _MB,
    "video": 16 * _MB,
    "image": 5 * _MB,
    "sticker": 512 * 1024,
    "document": 100 * _MB,
}
_ALIASES: Final = {"voice": "audio"}  # On-Prem's voice notes are audio messages


def limit_for(kind: str) -> int:
    """Bytes a download of media that came as a ``kind`` message may have; an unknown kind
    (a record stored before kinds were kept) gets the largest, a document's."""
    return MAX_BYTES.get(_ALIASES.get(kind, kind), MAX_BYTES["document"])


@final
class Slot:
    """One running download's place; ``release()`` is idempotent and synchronous."""

    __slots__ = ("_number", "_owner")

    def __init__(self, owner: DownloadSlots, number: str) -> None:
        self._owner: DownloadSlots | None = owner
        self._number = number

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back(self._number)


@final
class DownloadSlots:
    """Counts downloads per number and in all; never waits (a full count refuses)."""

    def __init__(self, *, per_number: int, total: int) -> None:
        if per_number < 1 or total < 1:
            raise ValueError("download limits must be >= 1")
        self._per_number = per_number
        self._total = total
        self._running: Counter[str] = Counter()
        self._all = 0

    @property
    def running(self) -> int:
        return self._all

    def running_for(self, number: str) -> int:
        return self._running[number]

    def take(self, number: str) -> Slot | None:
        """A slot for one more download of ``number``, or None if either limit is reached."""
        if self._all >= self._total or self._running[number] >= self._per_number:
            return None
        self._all += 1
        self._running[number] += 1
        return Slot(self, number)

    def _give_back(self, number: str) -> None:
        self._all -= 1
        self._running[number] -= 1
        if not self._running[number]:
            del self._running[number]


@final
class Relay:
    """The body of a media answer: the download's pieces as they come, then its connection
    closed and its slot released.

    Quart enters a response body with ``async with`` and closes it (``aclose``) once it is
    sent or the client went away. A relay never reached (the client left before the answer
    started) is closed when collected, so neither the connection nor the slot can leak.
    A download that fails midway raises, so the client's connection is aborted: a truncated
    file is never presented as a complete one.
    """

    __slots__ = ("_slot", "_stream", "_where")

    def __init__(self, stream: BodyStream, slot: Slot, where: dict[str, str]) -> None:
        self._stream = stream
        self._slot = slot
        self._where = where  # number and sid, for the log line of a failure

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self.close()
            raise
        except Exception as exc:
            self.close()
            log.warning(
                "media.relay_failed",
                **self._where,
                received=self._stream.received,
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        except BaseException:
            self.close()
            raise

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        self._slot.release()

    def __del__(self) -> None:
        # A finalizer may run outside trio (interpreter exit), where closing can raise: nothing to do.
        with contextlib.suppress(Exception):
            self.close()
