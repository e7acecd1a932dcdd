"""Stored records and their codecs (msgpack on disk, one Encoder/Decoder each).

Records are plain msgspec Structs keyed by field name with ``omit_defaults``: new
fields get defaults, so old data dirs decode after an upgrade.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Final, final

import msgspec

# Twilio statuses, ordered by how far a message got. A status only moves forward:
# a late ``sent`` after ``read`` changes nothing.
STATUS_RANK: Final[dict[str, int]] = {
    "scheduled": 0,
    "accepted": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "read": 6,
    # Terminal statuses outrank every in-flight one.
    "undelivered": 7,
    "failed": 7,
    "canceled": 7,
    "received": 7,
}
TERMINAL: Final = frozenset({"read", "undelivered", "failed", "canceled", "received"})


def advances(current: str, new: str) -> bool:
    """True if ``new`` is a forward move from ``current``."""
    if current in TERMINAL:
        return False
    return STATUS_RANK[new] > STATUS_RANK[current]


_SID_RANDOM_BYTES: Final = 8  # 64 random bits after the 48-bit creation time and the 16-bit slot
_SIDS_PER_DRAW: Final = 1024


class _SidEntropy:
    """OS randomness drawn 10 KiB at a time: one getrandom() per 1,024 sids, not one per sid.

    Batch intake mints a sid per message; a syscall each showed as ~20% of the
    batch route's CPU in py-spy. The bytes are the same CSPRNG output as
    ``secrets``; a lock keeps two threads from taking the same slice, and a
    forked child starts with a fresh draw so it never repeats its parent's sids.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._pos = 0

    def reset(self) -> None:
        self._pool, self._pos = b"", 0

    def take(self, count: int = 1) -> bytes:
        """``count`` sids' worth of random bytes."""
        size = _SID_RANDOM_BYTES * count
        with self._lock:
            if self._pos + size > len(self._pool):
                self._pool, self._pos = os.urandom(max(size, _SID_RANDOM_BYTES * _SIDS_PER_DRAW)), 0
            start = self._pos
            self._pos = start + size
            return self._pool[start : start + size]


_entropy: Final = _SidEntropy()
os.register_at_fork(after_in_child=_entropy.reset)


def new_sid(prefix: str, slot: int) -> str:
    """Twilio-shaped sid: two letters and 32 lower-case hex digits.

    The first 12 digits are the creation time (ms since the epoch), the next 4 the
    sender number's slot (``bucketing.slot_of``: the sid names the bucket holding
    it), the other 16 are random (64 bits). Messages are stored under their sid in
    an LMDB B-tree: with 128 random bits every new record landed on its own leaf
    page, so a commit of 1,000 of them rewrote ~1,000 pages (bench: 4x the writer's
    CPU, 25x the bytes written); time-first sids put a commit's records side by side.
    """
    return f"{_time_digits(prefix)}{slot:04x}{_entropy.take().hex()}"


@final
class SidBatch:
    """Sids for one batch like ``new_sid``'s: one clock read and one draw of randomness for all."""

    __slots__ = ("_digits", "_head", "_next")

    def __init__(self, prefix: str, count: int) -> None:
        self._head = _time_digits(prefix)
        self._digits = _entropy.take(count).hex()
        self._next = 0

    def mint(self, slot: int) -> str:
        """The next sid, carrying ``slot``; IndexError past ``count``."""
        start = self._next
        end = self._next = start + 2 * _SID_RANDOM_BYTES
        if end > len(self._digits):
            raise IndexError("this batch's sids are all taken")
        return f"{self._head}{slot:04x}{self._digits[start:end]}"


def new_sids(prefix: str, slots: Sequence[int]) -> list[str]:
    """One sid per slot in ``slots``, like ``new_sid``'s, from one draw (a batch's)."""
    batch = SidBatch(prefix, len(slots))
    return [batch.mint(slot) for slot in slots]


def _time_digits(prefix: str) -> str:
    return f"{prefix}{time.time_ns() // 1_000_000:012x}"


class StoredMedia(msgspec.Struct, array_like=True, frozen=True):
    """One media item of an inbound message: our ``ME`` sid, the channel's media id, its type, and
    the kind of message it came as (``image``, ``voice``, ``document``...; empty in records stored
    before kinds were kept), which decides its size limit."""

    sid: str
    channel_media_id: str
    content_type: str
    kind: str = ""


class SendParam(msgspec.Struct, array_like=True, frozen=True):
    """One parameter of a template send: ``type`` is Meta's (``text``, ``image``, ``video``,
    ``document``, ``payload``, ``coupon_code``), ``value`` the text, link, payload or code."""

    type: str
    value: str
    name: str = ""  # Meta's parameter_name (named templates)


class SendComponent(msgspec.Struct, array_like=True, frozen=True):
    """A template send's component: ``header``, ``body`` or ``button`` (with its sub_type and index)."""

    type: str
    params: list[SendParam]
    sub_type: str = ""  # a button's: quick_reply | url | copy_code
    index: int = 0


class TemplateSend(msgspec.Struct, array_like=True, frozen=True):
    """The WhatsApp template a message goes out as, resolved at create time.

    A snapshot, not a reference: editing the registry later never changes a
    message already accepted. ``params`` fill the body's {{1}}..{{n}} (file templates);
    a template synced from Meta carries its whole send in ``components`` instead.
    """

    content_sid: str
    namespace: str
    name: str
    language: str
    params: list[str] = []
    components: list[SendComponent] = []


class FallbackPlan(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """What a message falls back to, and when (``dispatcher.core.fallbacks``), fixed at create.

    ``from_number`` sends the fallback (an SMS number, or any other) when the message
    fails with one of ``error_codes``, or has not reached ``awaiting`` by ``due_at``.
    A free-form message refused for the 24 h window (63016) goes out instead as
    ``window_template`` from its own number, its body as the ``window_variable``.
    """

    from_number: str | None = None
    error_codes: list[int] = []
    due_at: float | None = None  # wall time: the fallback goes if ``awaiting`` is not reached by then
    awaiting: str = "delivered"  # "delivered" | "sent"
    body: str | None = None  # the fallback's text; default: the message's own (a template's rendered)
    window_template: str | None = None  # ContentSid sent on 63016, from the same number
    window_variable: str = "1"


class MessageRecord(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One message, outbound or inbound, as the Twilio API shows it.

    ``gc=False``: its fields (strings, numbers, lists of strings and frozen
    Structs) can never lead back to it, so the cyclic GC need not scan the
    record of every queued message.
    """

    sid: str
    account_sid: str
    from_number: str  # E.164, no channel prefix
    to_number: str  # E.164 or the channel's id of the customer (LINE), no channel prefix
    body: str = ""
    status: str = "queued"
    direction: str = "outbound-api"
    date_created: float = 0.0  # Unix seconds
    date_updated: float = 0.0
    date_sent: float | None = None
    error_code: int | None = None
    error_message: str | None = None
    status_callback: str | None = None
    num_segments: int = 1
    num_media: int = 0
    channel_id: str | None = None  # the WhatsApp message id (wamid) once sent
    attempts: int = 0
    outbox_seq: int | None = None  # its outbox entry's seq while queued (cancel removes it)
    media: list[StoredMedia] = []  # inbound media, served under .../Media/{sid}
    media_urls: list[str] = []  # MediaUrl, in order: one WhatsApp media message each
    template: TemplateSend | None = None  # sent as this template instead of free text
    valid_until: float | None = None  # wall time after which it is never sent (30036)
    send_at: float | None = None  # scheduled send (wall time), status "scheduled" until then
    messaging_service_sid: str | None = None
    parts: int = 1  # outbox entries (channel messages) this message goes out as
    fallback: FallbackPlan | None = None  # what it falls back to (kept after the fallback went)
    fallback_sid: str | None = None  # its fallback message, once created
    primary_sid: str | None = None  # on a fallback message: the message it stands in for
    fallback_error: str | None = None  # why its fallback could not be created
    # The status ("delivered" or "read") by which it arrived after its fallback went: recorded once.
    late_status: str | None = None
    # When its status webhooks said so (the console's timeline; date_sent and date_updated say the rest).
    date_delivered: float | None = None
    date_read: float | None = None
    # How its addresses read in the Twilio API: the channel's prefix ("line:"; "" for SMS).
    address_prefix: str = "whatsapp:"


class OutboxEntry(msgspec.Struct, array_like=True, frozen=True):
    """What the outbox holds per pending send: enough to schedule without reading the record."""

    sid: str
    to_number: str
    part: int = 0  # which of the message's channel messages (segment / media item)


class StoredToken(msgspec.Struct, kw_only=True, frozen=True):
    """An On-Premises API login token; ``expires_at`` is wall-clock Unix seconds."""

    token: str
    expires_at: float
    endpoint: str


record_encoder: Final = msgspec.msgpack.Encoder()
record_decoder: Final = msgspec.msgpack.Decoder(MessageRecord)
entry_decoder: Final = msgspec.msgpack.Decoder(OutboxEntry)
token_decoder: Final = msgspec.msgpack.Decoder(StoredToken)
