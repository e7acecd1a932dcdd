"""Idempotency keys in LMDB: replay, conflict, expiry and the sweeper."""

from __future__ import annotations

import pytest

from dispatcher.core import ledger
from dispatcher.core.bucketing import slot_of
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.store import Store
from dispatcher.messages import idempotency

ACCOUNT = "AC" + "0" * 32
T0 = 1_700_000_000.0


def record(body: str = "hi", at: float = T0) -> MessageRecord:
    return MessageRecord(
        sid=new_sid("SM", slot_of("+15550000001")), account_sid=ACCOUNT, from_number="+15550000001",
        to_number="+15551234567", body=body, date_created=at, date_updated=at,
    )  # fmt: skip


async def test_replay_conflict_and_expiry(writer: Store) -> None:
    digest = idempotency.fingerprint(("To", "+15551234567", "hi"))
    first = record()
    seq = await writer.write(idempotency.accept_once(ACCOUNT, "k", digest, first, T0, ttl=60))
    assert isinstance(seq, int)
    replay = await writer.write(idempotency.accept_once(ACCOUNT, "k", digest, record(), T0 + 59, ttl=60))
    assert isinstance(replay, idempotency.Replay) and replay.record.sid == first.sid
    with pytest.raises(idempotency.KeyConflict):
        await writer.write(idempotency.accept_once(ACCOUNT, "k", b"other", record(), T0 + 1, ttl=60))
    # Expired: the key is free again and makes a new message.
    later = record(at=T0 + 61)
    again = await writer.write(idempotency.accept_once(ACCOUNT, "k", digest, later, T0 + 61, ttl=60))
    assert isinstance(again, int)
    assert writer.count(b"outbox", b"+15550000001\x00") == 2
    # Its message deleted: the key makes a new one instead of replaying nothing.
    await writer.write(ledger.mark_failed("+15550000001", again, later.sid, 63003, "gone", T0 + 62))
    await writer.write(ledger.remove(later.sid, ACCOUNT))
    newest = record(at=T0 + 63)
    assert isinstance(
        await writer.write(idempotency.accept_once(ACCOUNT, "k", digest, newest, T0 + 63, ttl=60)), int
    )
    # Only the live expiry entry remains in the index.
    assert writer.count(b"meta", b"idemexp\x00") == 1


async def test_sweep_deletes_expired_keys_only_oldest_first(writer: Store) -> None:
    for i in range(10):
        rec = record(at=T0 + i)
        await writer.write(idempotency.accept_once(ACCOUNT, f"k{i}", b"d", rec, T0 + i, ttl=100))
    assert await writer.write(idempotency.sweep(T0 + 104.5, limit=3)) == 3  # k0..k2
    assert await writer.write(idempotency.sweep(T0 + 104.5)) == 2  # k3, k4
    assert await writer.write(idempotency.sweep(T0 + 104.5)) == 0
    left = sorted(k.split(b"\x00")[1].decode() for k, _ in writer.scan(b"idem", ACCOUNT.encode()))
    assert left == [f"k{i}" for i in range(5, 10)]
    assert writer.count(b"meta", b"idemexp\x00") == 5
    assert writer.count(b"messages", b"SM") == 10  # messages are not touched


def test_keys_must_be_visible_ascii() -> None:
    assert idempotency.check_key("order-42:abc") == "order-42:abc"
    for bad in ["", "a b", "x" * 256, "é", "tab\there"]:
        with pytest.raises(Exception, match="idempotency key"):
            idempotency.check_key(bad)
