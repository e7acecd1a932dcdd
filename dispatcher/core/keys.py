"""Bounded LMDB key parts: no value from outside can make a key LMDB refuses.

LMDB (as py-lmdb builds it) stores keys of at most 511 bytes: a longer one
fails the put with ``MDB_BAD_VALSIZE``, and since a put happens long after the
request that brought the value was answered (a callback's origin is queued when
the message is sent), such a value used to turn into a crash loop. The create
refuses what it can name (``gateway``: callback host names, idempotency keys,
addresses), and every key builder that takes a value from outside (a callback
origin, a channel message id, a customer id from a webhook, a webhook's dedup
key) passes it through ``part``, so whatever slips past validation, comes from
config, or comes back from WhatsApp is still a key that fits.

``part`` keeps a value as its UTF-8 bytes when it is short, and otherwise
replaces it with ``#`` and the hex SHA-256 of those bytes: the same value
always gives the same key (lookups find what writes stored), distinct values
give distinct keys, and the result never contains the NUL separator that
composite keys (``number NUL customer``) split on. A value that itself starts
with ``#`` is hashed too, so no stored value can pose as another's digest.
"""

from __future__ import annotations

import hashlib
from typing import Final

MAX_KEY: Final = 511  # bytes: LMDB's MDB_MAXKEYSIZE (``Environment.max_key_size()``)
PART_LIMIT: Final = 200  # bytes of one outside value in a key: two of them and a prefix still fit
_HASHED: Final = b"#"
HASHED_SIZE: Final = len(_HASHED) + 64


def part(value: str, limit: int = PART_LIMIT) -> bytes:
    """``value`` as a key part of at most ``max(limit, HASHED_SIZE)`` bytes, without NUL bytes.

    Values with a NUL byte are hashed as well: a NUL inside a part would split a
    composite key in the wrong place.
    """
    try:
        raw = value.encode()
    except UnicodeEncodeError:  # a lone surrogate: cannot come from decoded JSON or forms, but never raise
        raw = value.encode("utf-8", "surrogatepass")
    else:
        if len(raw) <= limit and not raw.startswith(_HASHED) and b"\x00" not in raw:
            return raw
    return _HASHED + hashlib.sha256(raw).hexdigest().encode()


def fits(key: bytes) -> bool:
    """Whether LMDB can store ``key`` (1 to ``MAX_KEY`` bytes)."""
    return 0 < len(key) <= MAX_KEY


SEP: Final = b"\x00"  # after the number in every per-number key: sorts below every digit


def number_key(number: str, rest: bytes = b"") -> bytes:
    """A per-number key: the number, NUL, then ``rest`` (prefix scans never bleed across numbers)."""
    return number.encode() + SEP + rest


def seq_key(number: str, seq: int) -> bytes:
    """Big-endian sequence so cursor order is FIFO order."""
    return number.encode() + SEP + seq.to_bytes(8, "big")
