"""Create parameters (form or JSON, already decoded) -> the gateway's SendRequest."""

from __future__ import annotations

from typing import Final

from dispatcher.core.params import Params, first
from dispatcher.messages.fallback_plan import NO_REQUEST, FallbackRequest
from dispatcher.messages.rules import SendRequest

FALLBACK_PARAMS: Final = (
    "FallbackFrom",
    "FallbackErrorCodes",
    "FallbackAfter",
    "FallbackAwait",
    "FallbackBody",
)


def send_request(params: Params) -> SendRequest:
    return SendRequest(
        to=first(params, "To"),
        from_=first(params, "From"),
        body=first(params, "Body"),
        status_callback=first(params, "StatusCallback"),
        media_urls=params.get("MediaUrl", []),
        content_sid=first(params, "ContentSid"),
        content_variables=first(params, "ContentVariables"),
        validity_period=first(params, "ValidityPeriod"),
        send_at=first(params, "SendAt"),
        schedule_type=first(params, "ScheduleType"),
        messaging_service_sid=first(params, "MessagingServiceSid"),
        fallback=fallback_request(params),
    )


def fallback_request(params: Params) -> FallbackRequest:
    """Our ``Fallback*`` extension parameters (README "Fallback"); the shared empty one without any."""
    if not any(name in params for name in FALLBACK_PARAMS):
        return NO_REQUEST
    return FallbackRequest(
        from_=first(params, "FallbackFrom"),
        error_codes=first(params, "FallbackErrorCodes"),
        after=first(params, "FallbackAfter"),
        awaiting=first(params, "FallbackAwait"),
        body=first(params, "FallbackBody"),
    )
