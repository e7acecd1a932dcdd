"""Idempotent create: ``Idempotency-Key`` / ``I-Twilio-Idempotency-Token``.

A retried create with the same key (per account) returns the original message
instead of sending a second one. The key record is written in the same LMDB
transaction as the message and its outbox entry, so there is no window where one
exists without the other; and since every write goes through the one writer, a
retry racing the original simply finds the original's key and replays it. The
same key with different parameters is refused (422). Keys live ``TTL`` seconds;
an index by expiry in ``meta`` lets a sweeper delete them in order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Final, cast

import attrs
import msgspec
import structlog
import trio

from dispatcher.core import ledger
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import SEP, Store, StoreClosedError, StoreError, WriteTxn
from dispatcher.core.twilio import TwilioError

log = structlog.get_logger()

TTL: Final = 24 * 3600.0
SWEEP_EVERY: Final = 600.0
SWEEP_BATCH: Final = 5000
HEADERS: Final = ("Idempotency-Key", "I-Twilio-Idempotency-Token")
_KEY: Final = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as HTTP header values go
_EXPIRY: Final = b"idemexp" + SEP


class Entry(msgspec.Struct, array_like=True, frozen=True):
    sid: str
    fingerprint: bytes
    expires_at: float


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Entry)


@attrs.frozen
class Replay:
    """The key was seen: this is the message the first request created."""

    record: MessageRecord


class KeyConflict(Exception):
    """The key was used with different parameters."""


def check_key(raw: str) -> str:
    if not _KEY.match(raw):
        raise TwilioError(
            400, 20001, "The idempotency key must be 1 to 255 visible ASCII characters (no spaces)."
        )
    return raw


def fingerprint(request: object) -> bytes:
    """A digest of the decoded create parameters (an attrs or msgspec object)."""
    return hashlib.sha256(_encoder.encode(request)).digest()


def _key(account_sid: str, key: str) -> bytes:
    return account_sid.encode() + SEP + key.encode()


def _expiry_key(expires_at: float, idem_key: bytes) -> bytes:
    return _EXPIRY + int(expires_at * 1000).to_bytes(8, "big") + idem_key


def accept_once(
    account_sid: str,
    key: str,
    digest: bytes,
    record: MessageRecord,
    now: float,
    ttl: float = TTL,
    *,
    accept: Callable[[WriteTxn], int] | None = None,
) -> Callable[[WriteTxn], int | Replay]:
    """``accept`` (default ``ledger.accept``) guarded by the key: the new seq, or the original
    message as a Replay. The gateway passes its intake (scheduled messages, sticky senders)."""
    accept = accept or ledger.accept(record)

    def fn(txn: WriteTxn) -> int | Replay:
        idem_key = _key(account_sid, key)
        raw = txn.get(b"idem", idem_key)
        if raw is not None:
            old = _decoder.decode(raw)
            if old.expires_at > now:
                if old.fingerprint != digest:
                    raise KeyConflict(key)
                original = txn.get(b"messages", ledger.sid_key(old.sid))
                if original is not None:
                    return Replay(ledger.load(original))
            # Expired, or its message was deleted: the key starts afresh.
            txn.delete(b"meta", _expiry_key(old.expires_at, idem_key))
        seq = accept(txn)
        expires_at = now + ttl
        txn.put(b"idem", idem_key, _encoder.encode(Entry(record.sid, digest, expires_at)))
        txn.put(b"meta", _expiry_key(expires_at, idem_key), b"")
        return seq

    return fn


def sweep(now: float, limit: int = SWEEP_BATCH) -> Callable[[WriteTxn], int]:
    """Delete up to ``limit`` expired keys, oldest first; returns how many."""

    def fn(txn: WriteTxn) -> int:
        cur = txn.txn.cursor(db=txn.db(b"meta"))
        done = 0
        horizon = int(now * 1000)
        if not cur.set_range(_EXPIRY):
            return 0
        while done < limit:
            index_key = cast(bytes, cur.key())
            if not index_key.startswith(_EXPIRY):
                break
            if int.from_bytes(index_key[len(_EXPIRY) : len(_EXPIRY) + 8], "big") > horizon:
                break
            txn.delete(b"idem", index_key[len(_EXPIRY) + 8 :])
            done += 1
            if not cur.delete():  # moves to the next key
                break
        return done

    return fn


async def sweep_forever(store: Store, wall: WallClock, every: float = SWEEP_EVERY) -> None:
    """Expire old keys of one bucket until its store closes for writes."""
    while True:
        await trio.sleep(every)
        try:
            removed = await store.write(sweep(wall.now()))
        except StoreClosedError:
            return  # shutting down
        except StoreError as exc:
            log.warning("idempotency.sweep_failed", error=str(exc))
            continue
        if removed:
            log.info("idempotency.swept", removed=removed)
