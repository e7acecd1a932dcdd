"""Create parameters (form or JSON, already decoded) -> the gateway's SendRequest."""

from __future__ import annotations

from dispatcher.frontdoor.params import Params, first
from dispatcher.gateway import SendRequest


def send_request(params: Params) -> SendRequest:
    return SendRequest(
        to=first(params, "To"),
        from_=first(params, "From"),
        body=first(params, "Body"),
        status_callback=first(params, "StatusCallback"),
    )
