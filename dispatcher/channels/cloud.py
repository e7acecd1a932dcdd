"""The WhatsApp Cloud API (Graph) wire format: requests out, answers in.

Pure translation, no I/O. ``POST /{version}/{phone-number-id}/messages`` with
``messaging_product: "whatsapp"``; errors come as one Graph ``{"error": {...}}``
envelope, branched on ``code`` (Meta: not on the title or the HTTP status).

What each code class means to the actor:

- 190 / 0 (token expired or invalid): ``Halt``. The number is degraded until
  the system-user token is replaced; retrying with the same token only burns
  the app's call budget, and the message stays queued.
- 130429, 4, 80007 (throughput, app or WABA call limits): ``Retry`` that also
  pushes the number's bucket back (``rate_limited``).
- 131056 (pair rate): ``Retry`` for that one recipient with Meta's 4^X
  back-off (``pair_limited``); other recipients keep flowing.
- 1, 2, 131000, 131016, 131057, 5xx: transient ``Retry``.
- everything else: ``Failed`` with the Twilio code.
"""

from __future__ import annotations

import math
from typing import Final, final

import msgspec

from actors.channel import Encoded
from actors.outcome import GENERIC_FAILURE, Failed, Halt, Outcome, Retry, retry_after
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
from dispatcher.core.models import MessageRecord

# Cloud code -> Twilio error code (twilio.com/docs/whatsapp/api/error-code-mapping, where listed).
TWILIO_CODE: Final[dict[int, int]] = {
    0: 63001,
    190: 63001,
    3: 63005,
    10: 63005,
    200: 63005,
    131005: 63005,
    368: 63005,
    131031: 63005,
    130497: 63005,
    4: 63018,
    80007: 63018,
    130429: 63018,
    131048: 63018,
    131056: 63018,
    1: 63012,
    2: 63012,
    131000: 63012,
    131016: 63012,
    131057: 63012,
    100: 63021,
    131008: 63021,
    131009: 63021,
    131051: 63021,
    132007: 63021,
    131021: 63031,
    131026: 63024,
    130472: 63024,
    131047: 63016,
    131049: 63049,
    131050: 63049,
    131052: 63019,
    131053: 63019,
    132000: 63028,
    132012: 63028,
    132001: 63027,
    132015: 63027,
    132016: 63027,
    132005: 63029,
}
AUTH_CODES: Final = frozenset({0, 190})
THROUGHPUT_CODES: Final = frozenset({4, 80007, 130429})
PAIR_RATE_CODE: Final = 131056
TRANSIENT_CODES: Final = frozenset({1, 2, 131000, 131016, 131057})
# Meta gives no Retry-After: on a throughput error the whole number pauses this long.
THROUGHPUT_PAUSE: Final = 1.0
# Sends reach Meta later than we release them, by a delay that varies (tens of ms on a busy
# host). Paced at the limit, that jitter bunches them into more than Meta's bucket holds: one
# slot of headroom is 1 ms at 1000/s, so the bucket keeps this many seconds' worth back.
JITTER_HEADROOM: Final = 0.05


def bucket_headroom(throughput: float) -> int:
    """Slots of the burst the number's token bucket keeps back (at least one)."""
    return max(1, math.ceil(throughput * JITTER_HEADROOM - 1e-9))


def twilio_code(code: int) -> int:
    return TWILIO_CODE.get(code, GENERIC_FAILURE)


# -- outbound ---------------------------------------------------------------------


class _Text(msgspec.Struct):
    body: str
    preview_url: bool = False


class TextMessage(msgspec.Struct, kw_only=True):
    to: str
    text: _Text
    messaging_product: str = "whatsapp"
    recipient_type: str = "individual"
    type: str = "text"


class MediaMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One of ``image``/``video``/``audio``/``document``/``sticker`` is set, named by ``type``."""

    to: str
    type: str
    # No defaults here: omit_defaults would drop them, and Graph requires messaging_product.
    messaging_product: str
    recipient_type: str
    image: Link | None = None
    video: Link | None = None
    audio: Link | None = None
    document: Link | None = None
    sticker: Link | None = None


class _Language(msgspec.Struct):
    code: str


class _Template(msgspec.Struct, omit_defaults=True):
    """Cloud templates are named per WABA: no namespace, language by code only."""

    name: str
    language: _Language
    components: list[Component] | list[RichComponent] | None = None


class TemplateMessage(msgspec.Struct, kw_only=True):
    to: str
    template: _Template
    messaging_product: str = "whatsapp"
    recipient_type: str = "individual"
    type: str = "template"


def encode_text(to: str, body: str) -> bytes:
    return encoder.encode(TextMessage(to=to, text=_Text(body=body)))


def encode_part(to: str, part: parts.Part) -> bytes:
    """The Graph send body for one channel message (text segment, media item, template)."""
    match part:
        case parts.TextPart(body=body):
            return encode_text(to, body)
        case parts.TemplatePart(template=template):
            language = _Language(template.language)
            return encoder.encode(
                TemplateMessage(
                    to=to,
                    template=_Template(
                        name=template.name, language=language, components=template_components(template)
                    ),
                )
            )
        case parts.MediaPart():
            message = MediaMessage(
                to=to, type=part.item.kind, messaging_product="whatsapp", recipient_type="individual"
            )
            return encoder.encode(with_media(message, part))


encode_send: Final = send_encoder(encode_text, encode_part)
"""The Graph send body for part ``part`` of a stored message: ``encode_send(record, part)``."""


# -- answers ----------------------------------------------------------------------


class ErrorData(msgspec.Struct, kw_only=True):
    details: str = ""


class GraphError(msgspec.Struct, kw_only=True):
    code: int
    message: str = ""
    type: str = ""
    error_subcode: int | None = None
    error_data: ErrorData | None = None
    fbtrace_id: str = ""

    @property
    def details(self) -> str:
        return self.error_data.details if self.error_data is not None else ""

    def describe(self) -> str:
        """Meta's own words, for error_message and logs (never a token)."""
        text = self.details or self.message or f"WhatsApp Cloud API error {self.code}"
        return f"{text} (fbtrace_id {self.fbtrace_id})" if self.fbtrace_id else text


class ErrorAnswer(msgspec.Struct):
    error: GraphError


class MediaInfo(msgspec.Struct, kw_only=True):
    """Graph's answer to ``GET /{version}/{media-id}``: the file's URL (valid 5 minutes) and facts."""

    url: str
    mime_type: str = ""
    file_size: int | None = None


media_info_decoder: Final = msgspec.json.Decoder(MediaInfo)
error_answer_decoder: Final = msgspec.json.Decoder(ErrorAnswer)


def decode_error(body: bytes) -> GraphError | None:
    try:
        return error_answer_decoder.decode(body).error
    except msgspec.DecodeError:
        return None


@final
class CloudChannel:
    """One Cloud API phone number: ``POST /{version}/{phone_number_id}/messages``."""

    name = "cloud"
    # Where Graph's media URLs point (lookaside.fbsbx.com today); a download elsewhere would hand
    # the number's token to whoever the metadata named.
    media_hosts: tuple[str, ...] = (".fbsbx.com", ".facebook.com", ".fbcdn.net", ".whatsapp.net")

    def __init__(self, phone_number_id: str, api_version: str) -> None:
        self.phone_number_id = phone_number_id
        self.api_version = api_version
        self.messages_path = urlpath.path(
            urlpath.check("api_version", api_version),
            urlpath.check("phone_number_id", phone_number_id),
            "messages",
        )

    def encode(self, record: MessageRecord, part: int = 0) -> Encoded:
        return POST, self.messages_path, encode_send(record, part), JSON_HEAD

    def authorize(self, head: Headers, method: bytes, target: bytes, body: bytes, auth: bytes) -> Headers:
        return [(b"authorization", auth), JSON_CONTENT]

    def twilio_code(self, code: int) -> int:
        return twilio_code(code)

    def media_target(self, media_id: str) -> bytes:
        """``GET /{version}/{media-id}``: the file's metadata, whose ``url`` serves the file."""
        return urlpath.path(self.api_version, urlpath.check("media_id", media_id))

    def media_location(self, answer: Response) -> str:
        """``url`` of Graph's media metadata (``{"url", "mime_type", "sha256", "file_size", "id"}``)."""
        try:
            url = media_info_decoder.decode(answer.body).url
        except msgspec.DecodeError as exc:
            raise ValueError(f"unreadable media metadata: {exc}") from exc
        if not url.startswith(("https://", "http://")) or len(url) > 4096:
            raise ValueError("the media metadata has no http(s) url")
        return url

    def classify(self, resp: Response) -> Outcome:
        if 200 <= resp.status < 300:
            return sent(resp.body)
        error = decode_error(resp.body)
        if error is None:
            if resp.status == 401:
                return Halt("HTTP 401 without a Graph error: the access token was refused")
            if resp.status == 429 or resp.status >= 500:
                return Retry(f"HTTP {resp.status}", after=retry_after(resp), rate_limited=resp.status == 429)
            return Failed(GENERIC_FAILURE, f"HTTP {resp.status} from the WhatsApp Cloud API")
        code = error.code
        if code in AUTH_CODES:
            return Halt(f"access token refused (code {code}): {error.describe()}")
        if code in THROUGHPUT_CODES:
            return Retry(f"throughput limit (code {code})", after=THROUGHPUT_PAUSE, rate_limited=True)
        if code == PAIR_RATE_CODE:
            return Retry("pair rate limit (code 131056)", rate_limited=True, pair_limited=True)
        if code in TRANSIENT_CODES or resp.status >= 500:
            return Retry(f"transient error (code {code})", after=retry_after(resp))
        return Failed(twilio_code(code), error.describe())
