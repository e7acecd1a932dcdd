"""The durable queue of customer callbacks: status callbacks and inbound-message webhooks.

A callback is queued by the same store write that makes the change it reports
(status change, inbound message), so it is committed with it or not at all: a
crash can never lose one, nor report a change that was rolled back. The
sender (``callback_sender.py``) deletes an entry once the customer answered
2xx, refused it for good, or it expired.

Keys are ``origin NUL seq(8B)`` (origin = ``scheme://host:port`` of the URL, hashed
if it is too long for a key: ``keys.part``), so
each destination is a FIFO of its own that the sender reads without scanning
any other destination's backlog: a dead endpoint's million pending callbacks
cost nothing to the others.

Parameters are computed at queue time in Twilio's form format and stored as
pairs, and signed at send time with the account's current auth token
(``X-Twilio-Signature``: HMAC-SHA1 over the URL and the sorted parameters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final
from urllib.parse import urlsplit

import msgspec

from dispatcher.core import keys
from dispatcher.core.events import InboundEvent
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import SEP, WriteTxn
from dispatcher.core.twilio import API_VERSION, CHANNEL_PREFIX

DB: Final = b"callbacks"
# Bytes of an origin kept as it is in keys: ``https://`` + a 253-byte DNS name + ``:65535``.
ORIGIN_LIMIT: Final = 300
CALLBACK_STATUSES: Final = frozenset({"sent", "delivered", "read", "failed", "undelivered"})

Params = list[tuple[str, str]]


class CallbackEntry(msgspec.Struct, array_like=True, frozen=True):
    """One pending POST to a customer URL (disk format: append fields only)."""

    kind: str  # "status" | "inbound"
    url: str
    account_sid: str
    number: str  # our WhatsApp number (E.164)
    customer: str  # the other party (E.164)
    sid: str  # the message the callback is about
    params: Params
    created_at: float  # wall clock, Unix seconds: the give-up time counts from here


_encoder: Final = msgspec.msgpack.Encoder()
entry_decoder: Final = msgspec.msgpack.Decoder(CallbackEntry)


def origin(url: str) -> str:
    """``https://Example.com/cb?x`` -> ``https://example.com:443``: the unit of isolation."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def origin_prefix(origin_: str) -> bytes:
    """``origin NUL``, the origin bounded: a create refuses host names DNS would not carry, but a
    configured URL's host is only checked for its form, and a key LMDB refuses must never be built."""
    return keys.part(origin_, ORIGIN_LIMIT) + SEP


def queue(txn: WriteTxn, entry: CallbackEntry) -> bytes:
    """Inside a write: append ``entry`` to its destination's FIFO; returns its key."""
    prefix = origin_prefix(origin(entry.url))
    seq = txn.next_seq(DB, prefix)
    key = prefix + seq.to_bytes(8, "big")
    txn.put(DB, key, _encoder.encode(entry), overwrite=False)
    return key


def status_changed(txn: WriteTxn, record: MessageRecord, now: float) -> None:
    """Inside the write that moved ``record``'s status: queue its status callback, if it has one."""
    if record.status_callback and record.status in CALLBACK_STATUSES:
        queue(
            txn,
            CallbackEntry(
                kind="status",
                url=record.status_callback,
                account_sid=record.account_sid,
                number=record.from_number,
                customer=record.to_number,
                sid=record.sid,
                params=status_params(record),
                created_at=now,
            ),
        )


def channel_name(record: MessageRecord) -> str:
    """Twilio's ``ChannelPrefix``: the channel that carried the message (``whatsapp``, ``line``, ``sms``)."""
    return record.address_prefix.rstrip(":") or "sms"


def status_params(record: MessageRecord) -> Params:
    """Twilio's status callback form for a WhatsApp message."""
    params: Params = [
        ("MessageSid", record.sid),
        ("SmsSid", record.sid),
        ("AccountSid", record.account_sid),
        ("From", record.address_prefix + record.from_number),
        ("To", record.address_prefix + record.to_number),
        ("MessageStatus", record.status),
        ("SmsStatus", record.status),
        ("ChannelPrefix", channel_name(record)),
        ("ChannelToAddress", record.to_number),
        ("StructuredMessage", "false"),
        ("ApiVersion", API_VERSION),
    ]
    if record.error_code is not None:
        params.append(("ErrorCode", str(record.error_code)))
        if record.error_message:
            params.append(("ErrorMessage", record.error_message))
    # Our fallback extension: which message stands in for which (README "Fallback").
    if record.fallback_sid is not None:
        params.append(("FallbackSid", record.fallback_sid))
    if record.primary_sid is not None:
        params.append(("PrimarySid", record.primary_sid))
    return params


def inbound_params(
    record: MessageRecord, event: InboundEvent, media_urls: list[str], replied_sid: str | None
) -> Params:
    """Twilio's WhatsApp inbound-message webhook form."""
    params: Params = [
        ("MessageSid", record.sid),
        ("SmsMessageSid", record.sid),
        ("SmsSid", record.sid),
        ("AccountSid", record.account_sid),
        ("From", record.address_prefix + record.from_number),
        ("To", record.address_prefix + record.to_number),
        ("Body", record.body),
        ("NumMedia", str(len(media_urls))),
        ("NumSegments", "1"),
        ("ReferralNumMedia", "0"),
        ("SmsStatus", "received"),
        ("MessageType", event.kind),
        ("ProfileName", event.profile_name),
        ("WaId", record.from_number.lstrip("+")),
        ("ApiVersion", API_VERSION),
    ]
    if record.address_prefix != CHANNEL_PREFIX:
        params.remove(("WaId", record.from_number.lstrip("+")))  # WhatsApp's id of the sender only
    for i, (url, item) in enumerate(zip(media_urls, record.media, strict=True)):
        params.append((f"MediaUrl{i}", url))
        params.append((f"MediaContentType{i}", item.content_type))
    optional = (
        ("Latitude", None if event.latitude is None else repr(event.latitude)),
        ("Longitude", None if event.longitude is None else repr(event.longitude)),
        ("Address", event.address),
        ("Label", event.label),
        ("ButtonText", event.button_text),
        ("ButtonPayload", event.button_payload),
        ("ListId", event.list_id),
        ("OriginalRepliedMessageSid", replied_sid),
        ("OriginalRepliedMessageSender", record.address_prefix + record.to_number if replied_sid else None),
        ("Forwarded", "true" if event.forwarded else None),
        ("FrequentlyForwarded", "true" if event.frequently_forwarded else None),
    )
    params.extend((name, value) for name, value in optional if value is not None)
    return params


def signature(auth_token: str, url: str, params: Params) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL and every name+value, sorted by name.

    Repeated names keep their values sorted too, as twilio-python's RequestValidator expects.
    """
    names = sorted({name for name, _ in params})
    by_name: dict[str, list[str]] = {}
    for name, value in params:
        by_name.setdefault(name, []).append(value)
    payload = url + "".join(name + value for name in names for value in sorted(by_name[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def idempotency_token(key: bytes, entry: CallbackEntry) -> str:
    """Stable across retries and restarts, so a receiver can drop duplicates (Twilio sends one too)."""
    return f"{entry.sid}-{key[-8:].hex()}"
