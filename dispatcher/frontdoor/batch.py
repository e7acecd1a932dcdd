"""``POST /v1/messages:batch``: the high-throughput intake.

A JSON array of messages is decoded by msgspec straight into Structs, each item
is validated by the same rules as the Twilio create, and every valid one is
committed in ONE store write per bucket (one transaction, one fsync each; a
one-bucket root: one for the batch), then handed to its number's actor. The
answer lists one result per item, in order: the new sid, or a Twilio-shaped
error for that item alone (a bucket whose write failed: 20503 for its items).
A structurally malformed body (not an array, a field of the wrong type, an
unknown field) rejects the whole batch with a 400 naming the path, e.g. ``$[3].to``.

Items with only ``to``, ``from``, ``body`` and ``status_callback`` (the bulk of
any batch) take ``CreateRules.validate_plain``, which works out once per batch what
they share. An item may also carry a template (``content_sid``,
``content_variables`` as a JSON string or object), a ``messaging_service_sid``
instead of ``from``, a ``validity_period`` or a schedule (``send_at`` with
``schedule_type``): it is judged by ``CreateRules.validate``, the single create's
own rules. Media are for the single create only: checking a MediaUrl resolves
its host, which a thousand items would turn into a thousand lookups.
"""

from __future__ import annotations

from typing import Final

import msgspec
import structlog

from dispatcher.core import jsondecode
from dispatcher.core.models import MessageRecord
from dispatcher.core.params import INVALID_PARAMETER
from dispatcher.core.twilio import ErrorBody, TwilioError, store_unavailable
from dispatcher.messages.fallback_plan import NO_REQUEST, FallbackRequest
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.rules import CreateRules, SendRequest

log = structlog.get_logger()

MAX_ITEMS: Final = 1000


class BatchItem(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    to: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    body: str | None = None
    status_callback: str | None = None
    content_sid: str | None = None
    content_variables: str | dict[str, str] | None = None
    messaging_service_sid: str | None = None
    validity_period: int | None = None
    send_at: str | None = None
    schedule_type: str | None = None
    # Our fallback extension (README "Fallback"), as the create's Fallback* parameters.
    fallback_from: str | None = None
    fallback_error_codes: str | list[int] | None = None
    fallback_after: float | None = None
    fallback_await: str | None = None
    fallback_body: str | None = None

    def is_plain(self) -> bool:
        """Only the fields ``CreateRules.validate_plain`` judges."""
        return (
            self.content_sid is None
            and self.content_variables is None
            and self.messaging_service_sid is None
            and self.validity_period is None
            and self.send_at is None
            and self.schedule_type is None
            and not self._has_fallback()
        )

    def _has_fallback(self) -> bool:
        return not (
            self.fallback_from is None
            and self.fallback_error_codes is None
            and self.fallback_after is None
            and self.fallback_await is None
            and self.fallback_body is None
        )

    def send_request(self) -> SendRequest:
        """The item as a single create's request, values as the form would carry them."""
        variables = self.content_variables
        return SendRequest(
            to=self.to,
            from_=self.from_,
            body=self.body,
            status_callback=self.status_callback,
            content_sid=self.content_sid,
            content_variables=variables
            if not isinstance(variables, dict)
            else _encoder.encode(variables).decode(),
            messaging_service_sid=self.messaging_service_sid,
            validity_period=None if self.validity_period is None else str(self.validity_period),
            send_at=self.send_at,
            schedule_type=self.schedule_type,
            fallback=self._fallback(),
        )

    def _fallback(self) -> FallbackRequest:
        if not self._has_fallback():
            return NO_REQUEST
        return FallbackRequest(
            from_=self.fallback_from,
            error_codes=_codes(self.fallback_error_codes),
            after=None if self.fallback_after is None else repr(self.fallback_after),
            awaiting=self.fallback_await,
            body=self.fallback_body,
        )


def _codes(codes: str | list[int] | None) -> str | None:
    """``[63003, 63024]`` as the form carries it (``"63003,63024"``); a string as it is."""
    if not isinstance(codes, list):
        return codes
    return ",".join(str(code) for code in codes)


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
        items = jsondecode.decode(_decoder, body)
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


def _validate(
    rules: CreateRules, account_sid: str, items: list[BatchItem]
) -> list[MessageRecord | TwilioError]:
    """Each item's record or error, in order: the plain items together, the others one by one."""
    plain = rules.validate_plain(account_sid, [item for item in items if item.is_plain()])
    if len(plain) == len(items):
        return plain
    judged = iter(plain)
    outcomes: list[MessageRecord | TwilioError] = []
    for item in items:
        if item.is_plain():
            outcomes.append(next(judged))
            continue
        try:
            outcomes.append(rules.validate(account_sid, item.send_request()))
        except TwilioError as exc:
            outcomes.append(exc)
    return outcomes


async def accept_batch(
    rules: CreateRules, gateway: Gateway, account_sid: str, items: list[BatchItem]
) -> bytes:
    """Validate every item, commit the valid ones together, answer per item in order."""
    results: list[Accepted | Rejected] = []
    records: list[MessageRecord] = []
    at: list[int] = []  # each record's place in ``results``
    for outcome in _validate(rules, account_sid, items):
        if isinstance(outcome, TwilioError):
            results.append(Rejected(outcome.error_body()))
        else:
            at.append(len(results))
            records.append(outcome)
            results.append(Accepted(outcome.sid, outcome.status))
    accepted = len(records)
    if records:
        stored = await gateway.accept_many(records)
        failed = [(i, error) for i, error in zip(at, stored, strict=True) if error is not None]
        if failed:
            log.error("batch.store_failed", messages=len(failed), of=len(records), error=str(failed[0][1]))
            if len(failed) == len(records):
                raise store_unavailable(failed[0][1], "the batch")
        for i, error in failed:  # other buckets' messages are stored: these alone were not
            results[i] = Rejected(store_unavailable(error, "the message").error_body())
        accepted -= len(failed)
    log.info("batch.accepted", account=account_sid, accepted=accepted, rejected=len(items) - accepted)
    return _encoder.encode(BatchResponse(accepted, len(items) - accepted, results))
