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

from typing import Final

import msgspec
import structlog

from dispatcher.frontdoor.params import INVALID_PARAMETER
from dispatcher.frontdoor.twilio import ErrorBody, TwilioError
from dispatcher.gateway import Gateway
from dispatcher.models import MessageRecord
from dispatcher.store import StoreError

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


async def accept_batch(gateway: Gateway, account_sid: str, items: list[BatchItem]) -> bytes:
    """Validate every item, commit the valid ones together, answer per item in order."""
    results: list[Accepted | Rejected] = []
    records: list[MessageRecord] = []
    for outcome in gateway.validate_plain(account_sid, items):
        if isinstance(outcome, TwilioError):
            results.append(Rejected(outcome.error_body()))
        else:
            records.append(outcome)
            results.append(Accepted(outcome.sid, outcome.status))
    if records:
        try:
            seqs = await gateway.store.write(gateway.intake_many(records))
        except StoreError as exc:
            log.error("batch.store_failed", messages=len(records), error=str(exc))
            raise TwilioError(503, 20503, "Service unavailable: the batch could not be stored.") from exc
        gateway.handoff_many(seqs, records)
    log.info("batch.accepted", account=account_sid, accepted=len(records), rejected=len(items) - len(records))
    return _encoder.encode(BatchResponse(len(records), len(items) - len(records), results))
