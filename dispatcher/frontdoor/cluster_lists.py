"""A list over an account across daemons that do not share a data root: every bucket, or a 503.

A daemon reads the buckets attached here (those it owns) and asks each other owner,
concurrently, for the first matches of *its* buckets (``listing.read_part``): the same
``GET .../Messages.json`` with the client's filters and page token and the client's own
credentials (the owner checks them again), marked ``PART_HEADER: 1,5`` (the buckets to
read) and ``HOP_HEADER`` (never forwarded or fanned out again). The owner answers those
buckets' records as msgpack; the walks are merged here into one page whose tokens stay
valid whichever daemon is asked next (``listing``).

A page missing a bucket's messages would look complete to the client (the Twilio SDK
pages on until ``next_page_uri`` is null), so a list never leaves one out: a bucket
without an owner now, an owner that does not answer in time, or one that no longer owns
what it was asked for, makes the list a 503 with ``Retry-After`` naming the buckets,
as a create for an unowned bucket is. The client retries; nothing is silently missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol, TypeVar, final

import attrs
import msgspec
import structlog
import trio

from actors.transport import Response, TransportError
from dispatcher.core.models import MessageRecord
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.forwarding import HOP_HEADER, Headers
from dispatcher.messages import listing
from dispatcher.ops import bucket_parts
from dispatcher.ops.bucket_parts import names
from dispatcher.ops.cluster import OwnerTable
from dispatcher.ownership.interface import Owner

log = structlog.get_logger()

T = TypeVar("T")

PART_HEADER: Final = "x-wadispatch-list-part"
PART_CONTENT_TYPE: Final = "application/vnd.wadispatch.list-part+msgpack"
ASK_TIMEOUT: Final = 15.0
# A part is buffered whole at both ends: ``Page`` without a token may not reach deeper than this.
MAX_PART: Final = 10 * listing.MAX_PAGE_SIZE


class Peers(Protocol):
    """How a daemon asks another (``forwarding.PeerPool`` is one)."""

    async def request(
        self, address: str, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> Response: ...


class ListPart(msgspec.Struct):
    """An owner's answer: the first matches of the buckets it was asked for, in walk order."""

    records: list[MessageRecord]


_part_encoder: Final = msgspec.msgpack.Encoder()
_part_decoder: Final = msgspec.msgpack.Decoder(ListPart)


@final
class ListUnavailable(TwilioError):
    """Some bucket's messages cannot be had now: the list is refused, to be retried."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(503, 20503, message)
        self.retry_after = retry_after


@attrs.frozen
class Gathered:
    """What a page is made of: the buckets read here, and the other owners' parts."""

    local: list[int]
    parts: list[list[MessageRecord]]


def encode_part(records: Sequence[MessageRecord]) -> bytes:
    return _part_encoder.encode(ListPart(list(records)))


@final
class ClusterLists:
    """The buckets a list reads here, and the parts it asks of their owners."""

    def __init__(
        self,
        *,
        count: int,
        owners: OwnerTable,
        here: Callable[[int], bool],
        pool: Peers,
        timeout: float = ASK_TIMEOUT,
        retry_after: int = 1,
    ) -> None:
        """``here``: bucket b is attached to this daemon (owned: its Store is the live one)."""
        self._count = count
        self._owners = owners
        self._here = here
        self._pool = pool
        self._timeout = timeout
        self._retry_after = retry_after

    def part_buckets(self, header: str) -> list[int]:
        """The buckets another daemon asks this one to read (``PART_HEADER``'s value): 400 if
        malformed, 503 if one is not attached here now (it moved: the asker retries)."""
        indexes = bucket_parts.parse(header, self._count)
        if indexes is None:
            raise TwilioError(
                400, 20001, f"Invalid {PART_HEADER} header {header[:80]!r}: bucket indexes expected."
            )
        moved = [i for i in indexes if not self._here(i)]
        if moved:
            raise ListUnavailable(
                f"Service unavailable: bucket(s) {names(moved)} are not owned by this daemon now. "
                "Retry shortly.",
                self._retry_after,
            )
        return indexes

    async def gather(self, query: listing.Query, target: bytes, authorization: str | None) -> Gathered:
        """Every bucket for ``query``: those attached here, the others' parts from their owners.

        ``target``: the request's path and query string (what each owner is asked);
        ``authorization``: the client's, which each owner checks."""
        local, remote = self.plan("their messages")
        if remote and listing.part_size(query) > MAX_PART:
            raise TwilioError(
                400,
                20007,
                f"Page {query.page} without a PageToken reaches past the {MAX_PART} newest messages a "
                "cluster gathers per daemon: follow next_page_uri (it carries a PageToken) instead.",
            )
        parts = await self.ask_owners(
            remote, target, authorization, lambda body: _part_decoder.decode(body).records, "their messages"
        )
        return Gathered(local, parts)

    def plan(self, what: str) -> tuple[list[int], list[tuple[Owner, list[int]]]]:
        """The buckets attached here, and each other owner with the buckets to ask it for
        (``ListUnavailable`` if a bucket has no owner now: ``what`` could not be listed)."""
        placed = bucket_parts.place(range(self._count), self._here, self._owners)
        if placed.unowned:
            raise ListUnavailable(
                f"Service unavailable: bucket(s) {names(placed.unowned)} have no owner right now, so {what} "
                "cannot be listed. Retry shortly.",
                self._retry_after,
            )
        return placed.local, placed.remote

    async def ask_owners(
        self,
        remote: Sequence[tuple[Owner, list[int]]],
        target: bytes,
        authorization: str | None,
        decode: Callable[[bytes], T],
        what: str,
    ) -> list[T]:
        """Each owner's answer to ``GET target`` for its buckets (``PART_HEADER``), concurrently,
        with the client's ``authorization``; ``ListUnavailable`` naming the buckets of any owner
        that did not answer 200 in time, or whose answer ``decode`` refused."""
        headers = [(HOP_HEADER, self._owners.owner_id.encode())]
        if authorization is not None:
            headers.append((b"authorization", authorization.encode("latin-1")))
        answers: list[T] = []
        failed: list[int] = []

        async def ask(owner: Owner, buckets: list[int]) -> None:
            asked = [*headers, (PART_HEADER.encode(), ",".join(map(str, buckets)).encode())]
            try:
                with trio.fail_after(self._timeout):
                    answer = await self._pool.request(owner.peer, b"GET", target, asked, b"")
                if answer.status != 200:
                    raise RuntimeError(f"it answered HTTP {answer.status}: {answer.body[:200]!r}")
                answers.append(decode(answer.body))
            except (TransportError, trio.TooSlowError, msgspec.DecodeError, RuntimeError) as exc:
                log.warning(
                    "list.part_failed",
                    owner=owner.owner_id,
                    address=owner.peer,
                    buckets=buckets,
                    error=repr(exc)[:300],
                )
                failed.extend(buckets)

        async with trio.open_nursery() as nursery:
            for owner, buckets in remote:
                nursery.start_soon(ask, owner, buckets)
        if failed:
            raise ListUnavailable(
                f"Service unavailable: the daemon owning bucket(s) {names(sorted(failed))} did not "
                f"answer, so {what} cannot be listed. Retry shortly.",
                self._retry_after,
            )
        return answers
