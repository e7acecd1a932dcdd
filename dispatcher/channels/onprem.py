"""The WhatsApp On-Premises API (v1) wire format: requests out, answers and webhooks in.

Pure translation, no I/O: the actor owns the connection and the policy.
"""

from __future__ import annotations

from typing import Final

import msgspec

from dispatcher.models import MessageRecord

MESSAGES_PATH: Final = b"/v1/messages"


# -- outbound ---------------------------------------------------------------------


class _Text(msgspec.Struct):
    body: str


class TextMessage(msgspec.Struct, kw_only=True):
    to: str
    text: _Text
    recipient_type: str = "individual"
    type: str = "text"
    preview_url: bool = False


_encoder: Final = msgspec.json.Encoder()


def wa_id(e164: str) -> str:
    """WhatsApp ids are the number's digits."""
    return e164.lstrip("+")


def encode_send(record: MessageRecord) -> bytes:
    """The ``POST /v1/messages`` body for a stored message."""
    return _encoder.encode(TextMessage(to=wa_id(record.to_number), text=_Text(body=record.body)))


# -- answers ----------------------------------------------------------------------


class _MessageId(msgspec.Struct):
    id: str


class SendAnswer(msgspec.Struct):
    messages: list[_MessageId]


class ApiError(msgspec.Struct, kw_only=True):
    code: int
    title: str = ""
    details: str = ""


class ErrorAnswer(msgspec.Struct):
    errors: list[ApiError]


send_answer_decoder: Final = msgspec.json.Decoder(SendAnswer)
error_answer_decoder: Final = msgspec.json.Decoder(ErrorAnswer)


def decode_error(body: bytes) -> ApiError | None:
    """The first error of an ``{"errors": [...]}`` body, or None if it has none."""
    try:
        errors = error_answer_decoder.decode(body).errors
    except msgspec.DecodeError:
        return None
    return errors[0] if errors else None


# -- webhooks -----------------------------------------------------------------------


class StatusError(msgspec.Struct, kw_only=True):
    code: int
    title: str = ""


class Status(msgspec.Struct, kw_only=True):
    id: str
    status: str
    timestamp: str = "0"
    recipient_id: str = ""
    errors: list[StatusError] = []


class InboundText(msgspec.Struct):
    body: str


class InboundMessage(msgspec.Struct, kw_only=True):
    id: str
    type: str
    timestamp: str = "0"
    text: InboundText | None = None
    # "from" is a keyword in Python.
    from_: str = msgspec.field(name="from")


class Webhook(msgspec.Struct, kw_only=True):
    """A flat On-Prem webhook: statuses, inbound messages, or system errors."""

    statuses: list[Status] = []
    messages: list[InboundMessage] = []
    errors: list[ApiError] = []


webhook_decoder: Final = msgspec.json.Decoder(Webhook)

# WhatsApp status -> Twilio status.
STATUS_MAP: Final = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
