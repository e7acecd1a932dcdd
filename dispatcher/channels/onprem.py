"""The WhatsApp On-Premises API (v1) wire format: requests out, answers and webhooks in.

Pure translation, no I/O: the actor owns the connection and the policy.
"""

from __future__ import annotations

from typing import Final, final

import msgspec

from actors.channel import Encoded
from actors.outcome import GENERIC_FAILURE, UNKNOWN_CODE_ATTEMPTS, Failed, Outcome, Reauth, Retry, retry_after
from actors.transport import Headers, Response
from dispatcher.channels.encoding import (
    JSON_CONTENT,
    JSON_HEAD,
    POST,
    Component,
    Link,
    RichComponent,
    encoder,
    send_encoder,
    sent,
    template_components,
    with_media,
)
from dispatcher.core import parts, urlpath
from dispatcher.core.models import MessageRecord, TemplateSend

MESSAGES_PATH: Final = b"/v1/messages"

# WhatsApp On-Prem code -> Twilio error code (twilio.com/docs/whatsapp/api/error-code-mapping).
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
# Codes worth another attempt: overload, rate limits, server trouble, HA routing.
TRANSIENT_CODES: Final = frozenset({429, 471, 500, 1011, 1014, 1015, 1016, 1017, 1018, 1023})


_RATE_LIMIT_GAVE_UP: Final = "Rate limit exceeded for Channel: gave up after repeated 429s"


# -- outbound ---------------------------------------------------------------------


class _Text(msgspec.Struct):
    body: str


class TextMessage(msgspec.Struct, kw_only=True):
    to: str
    text: _Text
    recipient_type: str = "individual"
    type: str = "text"
    preview_url: bool = False


class MediaMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One of ``image``/``video``/``audio``/``document``/``sticker`` is set, named by ``type``."""

    to: str
    type: str
    recipient_type: str = "individual"
    image: Link | None = None
    video: Link | None = None
    audio: Link | None = None
    document: Link | None = None
    sticker: Link | None = None


class _Language(msgspec.Struct):
    code: str
    policy: str = "deterministic"


class _Template(msgspec.Struct, omit_defaults=True):
    namespace: str
    name: str
    language: _Language
    components: list[Component] | list[RichComponent] | None = None


class TemplateMessage(msgspec.Struct, kw_only=True):
    to: str
    template: _Template
    recipient_type: str = "individual"
    type: str = "template"


def encode_text(to: str, body: str) -> bytes:
    return encoder.encode(TextMessage(to=to, text=_Text(body=body)))


def encode_template(to: str, template: TemplateSend) -> bytes:
    """A ``type: template`` message: the namespace, the language with its policy, the body filled in."""
    return encoder.encode(
        TemplateMessage(
            to=to,
            template=_Template(
                namespace=template.namespace,
                name=template.name,
                language=_Language(template.language),
                components=template_components(template),
            ),
        )
    )


def encode_part(to: str, part: parts.Part) -> bytes:
    """The ``POST /v1/messages`` body for one channel message of a stored message."""
    match part:
        case parts.TextPart(body=body):
            return encode_text(to, body)
        case parts.TemplatePart(template=template):
            return encode_template(to, template)
        case parts.MediaPart():
            return encoder.encode(with_media(MediaMessage(to=to, type=part.item.kind), part))


encode_send: Final = send_encoder(encode_text, encode_part)
"""The ``POST /v1/messages`` body for part ``part`` of a stored message: ``encode_send(record, part)``."""


# -- answers ----------------------------------------------------------------------


class ApiError(msgspec.Struct, kw_only=True):
    code: int
    title: str = ""
    details: str = ""


class ErrorAnswer(msgspec.Struct):
    errors: list[ApiError]


error_answer_decoder: Final = msgspec.json.Decoder(ErrorAnswer)


def decode_error(body: bytes) -> ApiError | None:
    """The first error of an ``{"errors": [...]}`` body, or None if it has none."""
    try:
        errors = error_answer_decoder.decode(body).errors
    except msgspec.DecodeError:
        return None
    return errors[0] if errors else None


# Webhooks are decoded in ``onprem_webhook.py``.


@final
class OnPremChannel:
    """The On-Premises API v1: ``POST /v1/messages`` with a bearer token from ``/v1/users/login``."""

    name = "onprem"
    media_hosts: tuple[str, ...] = ()  # GET /v1/media/{id} answers with the file

    def encode(self, record: MessageRecord, part: int = 0) -> Encoded:
        return POST, MESSAGES_PATH, encode_send(record, part), JSON_HEAD

    def authorize(self, head: Headers, method: bytes, target: bytes, body: bytes, auth: bytes) -> Headers:
        return [(b"authorization", auth), JSON_CONTENT]

    def twilio_code(self, code: int) -> int:
        return TWILIO_CODE.get(code, GENERIC_FAILURE)

    def media_target(self, media_id: str) -> bytes:
        """``GET /v1/media/{id}``: the file itself."""
        return urlpath.path("v1", "media", urlpath.check("media_id", media_id))

    def media_location(self, answer: Response) -> str:
        raise ValueError("On-Prem media answers are the file itself")

    def classify(self, resp: Response) -> Outcome:
        if resp.status in (200, 201):
            return sent(resp.body)
        if resp.status == 401:
            return Reauth()
        error = decode_error(resp.body)
        after = retry_after(resp)
        if resp.status == 429 or (error is not None and error.code in (429, 471, 1015)):
            return Retry(
                "rate limited", after=after, rate_limited=True, gives_up_with=(63018, _RATE_LIMIT_GAVE_UP)
            )
        if resp.status >= 500 or (error is not None and error.code in TRANSIENT_CODES):
            code = error.code if error is not None else resp.status
            message = f"WhatsApp API error {code} (HTTP {resp.status}): gave up after repeated attempts"
            return Retry(f"HTTP {resp.status}", after=after, gives_up_with=(63012, message))
        if error is not None:
            title = error.title or error.details or f"WhatsApp error {error.code}"
            if error.code not in TWILIO_CODE:
                # A code we do not know may be transient: retry it, a few times only.
                return Retry(
                    f"unknown WhatsApp error {error.code}",
                    after=after,
                    cap=UNKNOWN_CODE_ATTEMPTS,
                    gives_up_with=(GENERIC_FAILURE, f"WhatsApp error {error.code}: {title}"),
                )
            return Failed(self.twilio_code(error.code), title)
        return Failed(GENERIC_FAILURE, f"HTTP {resp.status} from the WhatsApp API")
