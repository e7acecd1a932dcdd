"""Classify one send attempt: the single place that decides what an answer means.

Kept pure (no I/O) so every branch is tested without sockets. WhatsApp error
codes map to Twilio error codes by Twilio's published table
(twilio.com/docs/whatsapp/api/error-code-mapping).
"""

from __future__ import annotations

from typing import Final

import attrs

from actors.transport import ConnectError, Response, TransportError
from dispatcher.channels import onprem

# WhatsApp On-Prem code -> Twilio error code.
TWILIO_CODE: Final[dict[int, int]] = {
    470: 63016,
    429: 63018,
    471: 63018,
    1015: 63018,
    1006: 63003,
    1013: 63003,
    1021: 63003,
    1002: 63024,
    1026: 63024,
    500: 63012,
    1011: 63012,
    1014: 63012,
    1023: 63012,
    1025: 63012,
    408: 63021,
    410: 63021,
    1001: 63021,
    430: 63022,
    432: 63022,
    433: 63022,
    400: 63019,
    402: 63020,
    472: 63032,
    1000: 63005,
    1005: 63001,
    1008: 63013,
    1009: 63013,
    1010: 63030,
    1022: 63010,
    1004: 63025,
    2000: 63028,
    2001: 63027,
    2003: 63027,
    2002: 63029,
}
# Codes worth another attempt: overload, rate limits, server trouble.
TRANSIENT_CODES: Final = frozenset({429, 471, 500, 1011, 1014, 1015, 1016, 1017, 1018, 1023})
GENERIC_FAILURE: Final = 30008  # Twilio's "Unknown error"


def twilio_code(wa_code: int) -> int:
    return TWILIO_CODE.get(wa_code, GENERIC_FAILURE)


@attrs.frozen
class Sent:
    channel_id: str


@attrs.frozen
class Retry:
    """Try again later; ``after`` is the server's Retry-After, if it gave one."""

    reason: str
    after: float | None = None
    rate_limited: bool = False
    ambiguous: bool = False


@attrs.frozen
class Reauth:
    """The token was refused: log in again, then retry."""


@attrs.frozen
class Failed:
    error_code: int
    error_message: str


Outcome = Sent | Retry | Reauth | Failed


def classify_response(resp: Response) -> Outcome:
    if resp.status in (200, 201):
        try:
            return Sent(onprem.send_answer_decoder.decode(resp.body).messages[0].id)
        except Exception:
            # 2xx with a body we cannot read: it was probably sent; retrying could duplicate.
            return Retry("unreadable success answer", ambiguous=True)
    if resp.status == 401:
        return Reauth()
    error = onprem.decode_error(resp.body)
    after = _retry_after(resp)
    if resp.status == 429 or (error is not None and error.code in (429, 1015)):
        return Retry("rate limited", after=after, rate_limited=True)
    if resp.status >= 500 or (error is not None and error.code in TRANSIENT_CODES):
        return Retry(f"HTTP {resp.status}", after=after)
    if error is not None:
        return Failed(twilio_code(error.code), error.title or error.details or f"WhatsApp error {error.code}")
    return Failed(GENERIC_FAILURE, f"HTTP {resp.status} from the WhatsApp API")


def classify_error(exc: TransportError) -> Retry:
    # ConnectError: the request never left. Anything else may have been received.
    return Retry(type(exc).__name__, ambiguous=not isinstance(exc, ConnectError))


def _retry_after(resp: Response) -> float | None:
    value = resp.header(b"retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
