"""Which bucket a sender number belongs to, and which bucket a sid names: pure arithmetic.

``bucket = sha256(number) mod B``. Every number also has a *slot*,
``sha256(number) mod 65536``, and a sid carries its sender's slot in the four hex
digits after its creation time (``SM`` + 12 hex ms + 4 hex slot + 16 hex random:
Twilio's 32 hex digits kept). B is a power of two (at most 65536), so
``slot mod B == sha256(number) mod B``: a sid names its bucket under every B, and
changing B (``wadispatch rebucket``) never invalidates a sid a customer holds.

Sids minted before the data root knew buckets (a data dir of an older version)
carry random digits where the slot goes; the data root records when slots began
(``DataRoot.slots_since_ms``), and such a sid is looked up in every bucket.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Final

SLOTS: Final = 1 << 16
MAX_BUCKETS: Final = SLOTS
_SLOT_AT: Final = 2 + 12  # prefix, then 12 hex digits of creation time
_SLOT_END: Final = _SLOT_AT + 4
SID_LENGTH: Final = 34


class BucketCountError(ValueError):
    """A bucket count that is not a power of two between 1 and 65536."""


def check_count(count: int) -> int:
    """``count`` if it is a valid bucket count; BucketCountError saying why not."""
    if not 1 <= count <= MAX_BUCKETS or count & (count - 1):
        raise BucketCountError(
            f"the bucket count must be a power of two from 1 to {MAX_BUCKETS} (got {count}): a sid "
            "carries its number's slot (sha256 mod 65536), which names its bucket only for such counts"
        )
    return count


@functools.lru_cache(maxsize=1 << 14)
def slot_of(number: str) -> int:
    """``sha256(number) mod 65536``: the last two bytes of the digest, big-endian."""
    digest = hashlib.sha256(number.encode()).digest()
    return int.from_bytes(digest[-2:], "big")


def bucket_of(number: str, count: int) -> int:
    """``sha256(number) mod count`` (``count`` a power of two: see the module's docstring)."""
    return slot_of(number) & (count - 1)


def sid_time_ms(sid: str) -> int | None:
    """The creation time (ms) a well-formed sid carries; None for anything else."""
    if len(sid) != SID_LENGTH:
        return None
    try:
        return int(sid[2:_SLOT_AT], 16)
    except ValueError:
        return None


def sid_slot(sid: str) -> int | None:
    """The slot a well-formed sid carries; None for anything else (its bucket cannot be known)."""
    if len(sid) != SID_LENGTH:
        return None
    try:
        return int(sid[_SLOT_AT:_SLOT_END], 16)
    except ValueError:
        return None
