"""Wire shapes of the On-Premises API, its webhooks and the simulator's control API.

Every type is a msgspec Struct and every codec is built once here, so the hot
path decodes straight into Structs and encodes with no dict round trip.
Field names and nesting follow the reference payloads (section 1 of
``whatsapp-and-twilio-api.md``); webhooks are flat (no ``entry``/``changes``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from dispatcher.simulator.config import API_VERSION

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Object = dict[str, object]

# --------------------------------------------------------------------------- envelope


class Meta(msgspec.Struct, frozen=True):
    api_status: str = "stable"
    version: str = API_VERSION


META = Meta()


class ErrorItem(msgspec.Struct, frozen=True, omit_defaults=True):
    code: int
    title: str
    details: str = ""
    href: str = ""


class ErrorBody(msgspec.Struct, frozen=True):
    errors: list[ErrorItem]
    meta: Meta = META


class MetaOnly(msgspec.Struct, frozen=True):
    meta: Meta = META


# --------------------------------------------------------------------------- users, health, settings


class LoginRequest(msgspec.Struct, frozen=True):
    new_password: str | None = None


class LoginUser(msgspec.Struct, frozen=True):
    token: str
    expires_after: str


class LoginResponse(msgspec.Struct, frozen=True):
    users: list[LoginUser]
    meta: Meta = META


class GatewayHealth(msgspec.Struct, frozen=True):
    gateway_status: str = "connected"


class HealthResponse(msgspec.Struct, frozen=True):
    health: GatewayHealth
    meta: Meta = META


class WebhooksSettings(msgspec.Struct, frozen=True):
    url: str | None = None


class ApplicationSettings(msgspec.Struct, frozen=True, omit_defaults=True):
    webhooks: WebhooksSettings | None = None


class Settings(msgspec.Struct, frozen=True):
    application: ApplicationSettings


class SettingsResponse(msgspec.Struct, frozen=True):
    settings: Settings
    meta: Meta = META


class ContactsRequest(msgspec.Struct, frozen=True):
    contacts: list[str]
    blocking: Literal["wait", "no_wait"] = "no_wait"
    force_check: bool = False


class ContactResult(msgspec.Struct, frozen=True, omit_defaults=True):
    input: str
    status: Literal["valid", "invalid"]
    wa_id: str | None = None


class ContactsResponse(msgspec.Struct, frozen=True):
    contacts: list[ContactResult]
    meta: Meta = META


# --------------------------------------------------------------------------- POST /v1/messages

MessageType = Literal[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "template",
    "hsm",
    "interactive",
]


class Text(msgspec.Struct, frozen=True):
    body: str


class Provider(msgspec.Struct, frozen=True):
    name: NonEmpty


class Media(msgspec.Struct, frozen=True, omit_defaults=True):
    """An image/audio/video/document/sticker object: by uploaded ``id`` or by ``link``."""

    id: NonEmpty | None = None
    link: NonEmpty | None = None
    caption: str | None = None
    filename: str | None = None
    provider: Provider | None = None


class Location(msgspec.Struct, frozen=True, omit_defaults=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    longitude: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
    name: str | None = None
    address: str | None = None


class Language(msgspec.Struct, frozen=True):
    policy: Literal["deterministic", "fallback"]
    code: NonEmpty


class Template(msgspec.Struct, frozen=True, omit_defaults=True):
    namespace: NonEmpty
    name: NonEmpty
    language: Language
    components: list[Object] | None = None


class Hsm(msgspec.Struct, frozen=True, omit_defaults=True):
    namespace: NonEmpty
    element_name: NonEmpty
    language: Language
    localizable_params: list[Object] | None = None


class InteractiveText(msgspec.Struct, frozen=True):
    text: NonEmpty


class Interactive(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["button", "list", "product", "product_list"]
    action: Object
    body: InteractiveText | None = None
    header: Object | None = None
    footer: InteractiveText | None = None


class Context(msgspec.Struct, frozen=True):
    message_id: NonEmpty


class SendRequest(msgspec.Struct, frozen=True):
    """The request body; the object named by ``type`` is checked in ``messages.py``."""

    to: str
    type: MessageType = "text"
    recipient_type: Literal["individual", "group"] = "individual"
    preview_url: bool = False
    ttl: str | int | None = None
    context: Context | None = None
    text: Text | None = None
    image: Media | None = None
    audio: Media | None = None
    video: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    contacts: Annotated[list[Object], msgspec.Meta(min_length=1)] | None = None
    template: Template | None = None
    hsm: Hsm | None = None
    interactive: Interactive | None = None


class MessageId(msgspec.Struct, frozen=True):
    id: str


class SendResponse(msgspec.Struct, frozen=True):
    messages: list[MessageId]
    meta: Meta = META


class MediaUploaded(msgspec.Struct, frozen=True):
    media: list[MessageId]
    meta: Meta = META


# --------------------------------------------------------------------------- webhooks (simulator -> daemon)


class Conversation(msgspec.Struct, frozen=True):
    id: str


class Pricing(msgspec.Struct, frozen=True):
    billable: bool = True
    pricing_model: str = "CBP"


PRICING = Pricing()


StatusName = Literal["sent", "delivered", "read", "failed", "deleted"]


class StatusError(msgspec.Struct, frozen=True, omit_defaults=True):
    code: int
    title: str
    href: str = ""


class Status(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    recipient_id: str
    status: str  # StatusName, or anything the control API asks for (statuses Meta adds later)
    timestamp: str
    """Unix seconds, as a string (like the real platform)."""
    conversation: Conversation | None = None
    pricing: Pricing | None = None
    errors: list[StatusError] | None = None


class StatusWebhook(msgspec.Struct, frozen=True):
    statuses: list[Status]


class Profile(msgspec.Struct, frozen=True):
    name: str


class InboundContact(msgspec.Struct, frozen=True):
    profile: Profile
    wa_id: str


class InboundMedia(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    mime_type: str
    sha256: str
    caption: str | None = None
    filename: str | None = None


InboundType = Literal[
    "text",
    "image",
    "audio",
    "voice",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "button",
    "interactive",
]
MEDIA_TYPES = ("image", "audio", "voice", "video", "document", "sticker")


class InboundLocation(msgspec.Struct, frozen=True, omit_defaults=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    longitude: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
    name: str | None = None
    address: str | None = None
    url: str | None = None


class InboundButton(msgspec.Struct, frozen=True):
    """A quick-reply button of a template, tapped."""

    text: str
    payload: str


class InteractiveReply(msgspec.Struct, frozen=True, omit_defaults=True):
    id: NonEmpty
    title: str
    description: str | None = None


class FlowReply(msgspec.Struct, frozen=True):
    """A WhatsApp Flows completion, as Meta posts it: the answers are a JSON string."""

    response_json: str
    body: str = "Sent"
    name: str = "flow"


class InboundInteractive(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["button_reply", "list_reply", "nfm_reply"]
    button_reply: InteractiveReply | None = None
    list_reply: InteractiveReply | None = None
    nfm_reply: FlowReply | None = None


class InboundContext(msgspec.Struct, frozen=True, omit_defaults=True):
    """On a reply: the message it answers (``from`` is the business number's digits)."""

    id: str | None = None
    sender: str | None = msgspec.field(default=None, name="from")
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None


class InboundMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    sender: str = msgspec.field(name="from")
    id: str
    timestamp: str
    type: InboundType
    text: Text | None = None
    image: InboundMedia | None = None
    audio: InboundMedia | None = None
    video: InboundMedia | None = None
    document: InboundMedia | None = None
    sticker: InboundMedia | None = None
    voice: InboundMedia | None = None
    location: InboundLocation | None = None
    contacts: list[Object] | None = None
    button: InboundButton | None = None
    interactive: InboundInteractive | None = None
    context: InboundContext | None = None


class InboundWebhook(msgspec.Struct, frozen=True):
    contacts: list[InboundContact]
    messages: list[InboundMessage]


# --------------------------------------------------------------------------- control API (/_sim/...)


class ClockAdvance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    advance: Annotated[float, msgspec.Meta(ge=0.0)]


class ClockResponse(msgspec.Struct, frozen=True):
    now: float


class InboundMediaSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mime_type: NonEmpty
    data: str
    """The file's bytes, base64."""
    caption: str | None = None
    filename: str | None = None


class InboundRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    number: NonEmpty
    sender: NonEmpty = msgspec.field(name="from")
    body: str | None = None
    media: InboundMediaSpec | None = None
    location: InboundLocation | None = None
    contacts: Annotated[list[Object], msgspec.Meta(min_length=1)] | None = None
    button: InboundButton | None = None
    interactive: InboundInteractive | None = None
    # With ``media``: "sticker" or "voice" instead of the type its MIME type implies.
    type: InboundType | None = None
    context: InboundContext | None = None
    profile_name: str = "Customer"
    # Delivered this many times (the platform redelivers what it thinks was not received).
    repeat: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1


class StatusRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /_sim/status``: post one status webhook now, whatever the message's history."""

    number: NonEmpty
    id: NonEmpty
    # Any status, also one the platform may add later (``warning``, ``bogus``...).
    status: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    recipient_id: str = ""
    errors: list[StatusError] | None = None
    repeat: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1


class WebhookRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /_sim/webhook``: post ``body`` (any webhook object, as recorded elsewhere) to the number."""

    number: NonEmpty
    body: Object
    repeat: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1


class InboundResult(msgspec.Struct, frozen=True, omit_defaults=True):
    messages: list[MessageId]
    media_id: str | None = None


class ReceivedItem(msgspec.Struct, frozen=True):
    recipient: str
    type: str
    content: str | Object
    id: str


class ReceivedResponse(msgspec.Struct, frozen=True):
    number: str
    messages: list[ReceivedItem]


class NumberAdded(msgspec.Struct, frozen=True):
    number: str
    endpoint: str


encode = msgspec.json.Encoder().encode
decode_send = msgspec.json.Decoder(SendRequest).decode
decode_login = msgspec.json.Decoder(LoginRequest).decode
decode_settings = msgspec.json.Decoder(ApplicationSettings).decode
decode_contacts = msgspec.json.Decoder(ContactsRequest).decode
decode_clock = msgspec.json.Decoder(ClockAdvance).decode
decode_inbound = msgspec.json.Decoder(InboundRequest).decode
decode_status = msgspec.json.Decoder(StatusRequest).decode
decode_webhook = msgspec.json.Decoder(WebhookRequest).decode
