"""Create parameters (form or JSON, already decoded) -> the gateway's SendRequest."""

from __future__ import annotations

from dispatcher.core.params import Params, first
from dispatcher.messages.rules import SendRequest


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
    )
