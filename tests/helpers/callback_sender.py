"""A CallbackSender under test: fake DNS, a MockTransport recording requests, the queue it drains."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import msgspec
import trio

from dispatcher.core import callbacks
from dispatcher.core.callbacks import CallbackEntry
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.ssrf import UrlGuard
from dispatcher.core.store import Store, WriteTxn
from dispatcher.webhooks.callback_sender import CallbackSender, SenderSettings
from dispatcher.webhooks.twiml import Reply
from tests.helpers.buckets import as_buckets

ACCOUNT = "AC00000000000000000000000000000001"
TOKEN = "secret-token"  # the account's auth token: what callbacks are signed with
PUBLIC = {"a.example": "93.184.216.34", "b.example": "93.184.216.35", "inside.example": "10.0.0.5"}
"""The fake DNS: host -> address (one of them private)."""

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


async def resolve(host: str, port: int) -> list[str]:
    """Resolves ``PUBLIC``'s hosts; any other host is unknown."""
    if host not in PUBLIC:
        raise OSError("unknown host")
    return [PUBLIC[host]]


def entry(url: str, sid: str = "SM1", kind: str = "status", created_at: float = 0.0) -> CallbackEntry:
    """A queued callback of ``kind`` for message ``sid`` to ``url``."""
    return CallbackEntry(
        kind=kind,
        url=url,
        account_sid=ACCOUNT,
        number="+15550000001",
        customer="+15551234567",
        sid=sid,
        params=[("MessageSid", sid), ("MessageStatus", "delivered")],
        created_at=created_at,
    )


class Harness:
    """A CallbackSender on ``store`` whose HTTP goes to ``handler`` (recorded in ``requests``);
    ``settings`` override the short test defaults. ``queue`` adds entries and wakes it."""

    def __init__(self, store: Store, handler: Handler, **settings: float) -> None:
        self.store = store
        self.wall = TrioWallClock(start=1_000_000.0)
        self.requests: list[tuple[float, httpx.Request]] = []
        self.replies: list[tuple[bytes, list[Reply]]] = []

        async def record(request: httpx.Request) -> httpx.Response:
            self.requests.append((trio.current_time(), request))
            return await handler(request)

        self.client = httpx.AsyncClient(transport=httpx.MockTransport(record))
        defaults = {"backoff_initial": 1.0, "backoff_max": 8.0, "poll_interval": 0.5, "give_up_after": 3600.0}
        self.sender = CallbackSender(
            buckets=as_buckets(store),
            client=self.client,
            auth_token={ACCOUNT: TOKEN}.get,
            guard=UrlGuard(resolver=resolve),
            wall=self.wall,
            settings=SenderSettings(**(defaults | settings)),  # type: ignore[arg-type]
            on_reply=self.on_reply,
        )

    async def on_reply(self, key: bytes, item: CallbackEntry, replies: list[Reply]) -> None:
        self.replies.append((key, replies))
        await self.store.write(lambda txn: txn.delete(callbacks.DB, key))

    async def queue(self, *items: CallbackEntry) -> None:
        now = self.wall.now()

        def fn(txn: WriteTxn) -> None:
            for item in items:
                callbacks.queue(txn, msgspec.structs.replace(item, created_at=now))

        await self.store.write(fn)
        self.sender.wake()

    def pending(self) -> int:
        return self.store.count(callbacks.DB, b"")

    def hosts(self) -> list[str]:
        return [r.headers["host"] for _, r in self.requests]
