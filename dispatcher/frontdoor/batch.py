"""``POST /v1/messages:batch``: the high-throughput intake.

A JSON array of messages is decoded by msgspec straight into Structs, each item
is validated by the same rules as the Twilio create, and every valid one is
committed in ONE store write (one transaction, one fsync), then handed to its
number's actor. The answer lists one result per item, in order: the new sid, or
a Twilio-shaped error for that item alone. A structurally malformed body (not
an array, a field of the wrong type, an unknown field) rejects the whole batch
with a 400 naming the path, e.g. ``$[3].to``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
import structlog

from dispatcher.frontdoor.params import INVALID_PARAMETER
from dispatcher.frontdoor.twilio import ErrorBody, TwilioError
from dispatcher.gateway import Gateway, SendRequest
from dispatcher.models import MessageRecord
from dispatcher.store import StoreError, WriteTxn

log = structlog.get_logger()

MAX_ITEMS: Final = 1000


class BatchItem(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    to: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    body: str | None = None
    status_callback: str | None = None


class Accepted(msgspec.Struct):
    sid: str
    status: str


class Rejected(msgspec.Struct):
    error: ErrorBody


class BatchResponse(msgspec.Struct):
    accepted: int
    rejected: int
    results: list[Accepted | Rejected]


_decoder: Final = msgspec.json.Decoder(list[BatchItem])
_encoder: Final = msgspec.json.Encoder()


def decode(body: bytes) -> list[BatchItem]:
    try:
        items = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise TwilioError(400, INVALID_PARAMETER, f"Invalid batch: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TwilioError(400, INVALID_PARAMETER, f"The batch is not valid JSON: {exc}") from None
    if not items:
        raise TwilioError(400, INVALID_PARAMETER, "The batch is empty.")
    if len(items) > MAX_ITEMS:
        raise TwilioError(
            413, INVALID_PARAMETER, f"A batch holds at most {MAX_ITEMS} messages, this one {len(items)}."
        )
    return items


def _accept_all(gateway: Gateway, records: list[MessageRecord]) -> Callable[[WriteTxn], list[int]]:
    accepts = [gateway.intake(record) for record in records]

    def fn(txn: WriteTxn) -> list[int]:
        return [accept(txn) for accept in accepts]

    return fn


async def accept_batch(gateway: Gateway, account_sid: str, items: list[BatchItem]) -> bytes:
    """Validate every item, commit the valid ones together, answer per item in order."""
    results: list[Accepted | Rejected] = []
    records: list[MessageRecord] = []
    for item in items:
        try:
            request = SendRequest(
                to=item.to, from_=item.from_, body=item.body, status_callback=item.status_callback
            )
            record = gateway.validate(account_sid, request)
        except TwilioError as exc:
            results.append(Rejected(exc.error_body()))
            continue
        records.append(record)
        results.append(Accepted(record.sid, record.status))
    if records:
        try:
            seqs = await gateway.store.write(_accept_all(gateway, records))
        except StoreError as exc:
            log.error("batch.store_failed", messages=len(records), error=str(exc))
            raise TwilioError(503, 20503, "Service unavailable: the batch could not be stored.") from exc
        for seq, record in zip(seqs, records, strict=True):
            gateway.handoff(seq, record)
    log.info("batch.accepted", account=account_sid, accepted=len(records), rejected=len(items) - len(records))
    return _encoder.encode(BatchResponse(len(records), len(items) - len(records), results))
