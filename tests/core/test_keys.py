"""Every key built from an outside value fits LMDB, and a write finds what it stored later.

LMDB refuses keys over 511 bytes at put time (``MDB_BAD_VALSIZE``). Each test
drives a real key builder with values far over that, through real LMDB, and
checks both that the write succeeds and that the lookup by the same value
finds it: a bound that broke lookups would be as bad as the crash it avoids.
"""

from __future__ import annotations

from typing import Final

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import ServiceConfig
from dispatcher.core import callbacks, keys, ledger, orphans, window
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store, WriteTxn
from dispatcher.messages import idempotency
from dispatcher.messages.services import Services
from dispatcher.webhooks import dedup
from tests.helpers.buckets import as_buckets

ACCOUNT: Final = "AC" + "0" * 31 + "1"
NUMBER: Final = "+15550000001"
T0: Final = 1_800_000_000.0
# 256 characters (the webhook decoders' bound on an id) of 4 UTF-8 bytes each: 1,024 bytes.
WIDE: Final = "\U0001f600" * 256
LONG_HOST: Final = "a" * 600 + ".example.com"


def record(sid_tail: str = "a", **kw: object) -> MessageRecord:
    fields: dict[str, object] = {
        "sid": "SM" + sid_tail * 32,
        "account_sid": ACCOUNT,
        "from_number": NUMBER,
        "to_number": "+15551234567",
        "body": "hi",
        "status": "queued",
        "date_created": T0,
        "date_updated": T0,
    }
    fields.update(kw)
    return MessageRecord(**fields)  # type: ignore[arg-type]


@given(st.text(max_size=2000), st.integers(min_value=keys.HASHED_SIZE, max_value=400))
def test_a_part_is_bounded_nul_free_and_stable(value: str, limit: int) -> None:
    part = keys.part(value, limit)
    assert 0 < len(part) <= limit or (value == "" and part == b"")
    assert b"\x00" not in part
    assert keys.part(value, limit) == part
    if len(value.encode()) <= limit and not value.startswith("#") and "\x00" not in value:
        assert part == value.encode()  # short values stay readable


@given(st.lists(st.text(max_size=600), min_size=2, max_size=20, unique=True))
def test_distinct_values_give_distinct_parts(values: list[str]) -> None:
    assert len({keys.part(v) for v in values}) == len(values)


def test_a_value_cannot_pose_as_the_digest_of_another() -> None:
    long = "x" * 1000
    digest = keys.part(long).decode()
    assert digest.startswith("#") and keys.part(digest) != keys.part(long)


async def test_a_callback_for_a_long_origin_is_queued_and_found_under_its_prefix(writer: Store) -> None:
    # A create refuses such a host (21609), but a number's configured status_callback is only
    # checked for its form: the queue must still hold it.
    url = f"https://{LONG_HOST}/cb"
    entry = callbacks.CallbackEntry("status", url, ACCOUNT, NUMBER, "+15551234567", "SM1", [], T0)
    key = await writer.write(lambda txn: callbacks.queue(txn, entry))
    prefix = callbacks.origin_prefix(callbacks.origin(url))
    assert keys.fits(key) and key.startswith(prefix)
    assert [k for k, _ in writer.scan(callbacks.DB, prefix)] == [key]
    other = await writer.write(
        lambda txn: callbacks.queue(txn, msgspec.structs.replace(entry, url=f"https://b{LONG_HOST}/cb"))
    )
    assert not other.startswith(prefix)  # two long origins stay two destinations
    # What the callback sender reads back as the lane's name is text.
    assert key[: key.index(b"\x00")].decode().startswith("#")


async def test_a_long_channel_id_is_recorded_and_its_statuses_find_the_message(writer: Store) -> None:
    sent = record()
    seq = await writer.write(ledger.accept(sent))
    early = WIDE + "early"  # a status that beats the send's commit is parked under the same bound
    await writer.write(ledger.apply_status(NUMBER, early, "delivered", None, None, T0 + 1))
    assert await writer.write(lambda txn: orphans.count(txn, NUMBER)) == 1
    await writer.write(ledger.mark_sent(NUMBER, seq, sent.sid, early, T0 + 2))
    assert ledger.load(writer.get(b"messages", ledger.sid_key(sent.sid)) or b"").status == "delivered"
    assert await writer.write(lambda txn: orphans.count(txn, NUMBER)) == 0
    assert all(keys.fits(bytes(k)) for k, _ in writer.scan(b"meta", b""))
    second = record("b")
    seq = await writer.write(ledger.accept(second))
    await writer.write(ledger.mark_sent(NUMBER, seq, second.sid, WIDE, T0 + 3))
    outcome, moved = await writer.write(ledger.apply_status(NUMBER, WIDE, "read", None, None, T0 + 4))
    assert outcome == "moved" and moved is not None and moved.sid == second.sid and moved.status == "read"


async def test_long_dedup_keys_are_remembered(writer: Store) -> None:
    scope = "x" * 300
    await writer.write(dedup.mark(scope, [WIDE, "short"], T0))
    assert dedup.seen(writer, scope, [WIDE, "short", WIDE + "other"], T0 + 1) == {WIDE, "short"}


async def test_a_long_customer_id_opens_its_window(writer: Store) -> None:
    def touch(txn: WriteTxn) -> None:
        window.touch(txn, NUMBER, WIDE, T0)

    await writer.write(touch)
    assert window.is_open(writer, NUMBER, WIDE, T0 + 60)
    assert not window.is_open(writer, NUMBER, WIDE + "x", T0 + 60)


async def test_a_sticky_sender_for_a_long_recipient_is_kept(writer: Store) -> None:
    service = "MG" + "0" * 32
    await writer.write(lambda txn: Services.remember(txn, service, WIDE, NUMBER))
    config = ServiceConfig(sid=service, account="AC" + "0" * 32, numbers=[NUMBER])
    assert Services([config], as_buckets(writer)).sticky(config, WIDE) == NUMBER


async def test_the_longest_idempotency_key_fits_with_its_expiry_index(writer: Store) -> None:
    key = idempotency.check_key("~" * 255)
    sent = record()
    await writer.write(idempotency.accept_once(ACCOUNT, key, b"d", sent, T0))
    replay = await writer.write(idempotency.accept_once(ACCOUNT, key, b"d", record("c"), T0 + 1))
    assert isinstance(replay, idempotency.Replay) and replay.record.sid == sent.sid
