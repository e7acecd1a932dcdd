"""Messages in tests: store one as intake does, read its record back, wait for a state.

Two sides: the store and actors directly (``submit``, ``record_of``, ``wait_for``),
and a running daemon's HTTP API (``create``, ``fetch``, ``wait_status``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import trio

from actors.number import NumberActor
from dispatcher.core import ledger
from dispatcher.core.bucketing import slot_of
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.store import Store
from tests.helpers.daemon import ACCOUNT, messages_path


async def submit(
    store: Store,
    actor: NumberActor | None,
    to: str,
    body: str = "hi",
    *,
    number: str,
    account: str = ACCOUNT,
    status_callback: str | None = None,
) -> MessageRecord:
    """Store a message from ``number`` as accepted, then hand it to ``actor``.

    With ``actor`` None it only waits in the outbox: what an actor finds when it starts.
    """
    record = MessageRecord(
        sid=new_sid("SM", slot_of(number)),
        account_sid=account,
        from_number=number,
        to_number=to,
        body=body,
        status_callback=status_callback,
    )
    seq = await store.write(ledger.accept(record))
    if actor is not None:
        actor.notify(seq, record)
    return record


def record_of(store: Store, sid: str) -> MessageRecord:
    """The stored record of message ``sid`` (which must exist)."""
    raw = store.get(b"messages", ledger.sid_key(sid))
    assert raw is not None
    return ledger.load(raw)


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 3600.0, step: float = 0.01) -> None:
    """Poll ``predicate`` every ``step`` seconds; fail after ``timeout``.

    Meant for MockClock (autojump): polling the virtual clock costs nothing, and
    ``step`` is the resolution of any time a test measures after it.
    """
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling on the virtual clock costs nothing
            await trio.sleep(step)


async def create(client: httpx.AsyncClient, frm: str, to: str, body: str = "hello", **params: str) -> str:
    """POST a WhatsApp message (``params`` add Twilio parameters, e.g. StatusCallback); its sid."""
    data = {"From": f"whatsapp:{frm}", "To": f"whatsapp:{to}", "Body": body, **params}
    resp = await client.post(messages_path(), data=data)
    assert resp.status_code == 201, resp.text
    sid: str = resp.json()["sid"]
    return sid


async def fetch(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    """The message resource as the API shows it."""
    body: dict[str, Any] = (await client.get(messages_path(sid))).json()
    return body


async def wait_status(
    client: httpx.AsyncClient, sid: str, *wanted: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the API (real clock) until message ``sid`` is in one of the ``wanted`` states; the resource."""
    with trio.fail_after(timeout):
        while True:
            body = await fetch(client, sid)
            if body["status"] in wanted:
                return body
            await trio.sleep(0.02)
