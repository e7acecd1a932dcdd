"""The channel spec language: what a channel kind's TOML file may say, as msgspec Structs.

Every table refuses keys it does not know (a typo must not silently fall back to a
default), so a spec is checked whole when it is loaded. Strings in ``send``, ``auth``
and the simulator's answers are templates with ``{placeholders}`` (``template``); the
values of ``*_path`` keys and ``webhook`` item fields are dotted paths (``paths``).

A spec, top to bottom::

    kind, description, prefix, address, recipient_pattern, base_url, sources
    [settings.NAME]          what a number of this kind configures (secret or not, required)
    [limits]                 default rate, burst, per-recipient pair rate
    [auth]                   none | basic | bearer | header | query | hmac, static or via [auth.login]
    [send]                   format, method, path, headers; [send.text|media|template] per kind
    [answer]                 where the message id, the channel's error code and message sit
    [[errors]]               ordered rules: status / channel code / body text -> class + Twilio code
    [webhook]                signature; [webhook.status] and [webhook.inbound] locations
    [simulator]              the answers and webhook documents the simulator serves for this kind
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Kind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,39}$")]
HeaderName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]{1,64}$")]
Method = Literal["POST", "PUT", "GET"]
ErrorClass = Literal["transient", "rate_limited", "credentials", "permanent", "duplicate"]
TwilioCode = Annotated[int, msgspec.Meta(ge=10_000, le=99_999)]
# A body template: a TOML table whose leaves are strings (templates), numbers or booleans.
BodyTemplate = dict[str, object]


class Setting(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One setting a number of this kind gives in its ``[numbers.settings]`` table."""

    description: str = ""
    # A secret is given like any config secret ({value|env|file}) and never logged.
    secret: bool = False
    required: bool = True
    default: str | None = None


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Default pace of a number of this kind (a number's ``rate``/``burst`` override them)."""

    rate: Annotated[float, msgspec.Meta(ge=0.001, le=100_000.0)] = 10.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10
    # One message per recipient every pair_interval seconds, bursts of pair_burst (0: no pair rate).
    pair_interval: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 0.0
    pair_burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


class Login(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A login call whose answer carries a token and its lifetime, renewed before it lapses
    (as the On-Prem token): e.g. OAuth2 client credentials."""

    path: str
    method: Method = "POST"
    format: Literal["json", "form"] = "form"
    headers: dict[str, str] = {}
    body: BodyTemplate = {}
    token_path: str = "access_token"
    # Seconds from now (``expires_in``); without it a token is kept for ``default_ttl``.
    expires_in_path: str | None = "expires_in"
    default_ttl: Annotated[float, msgspec.Meta(gt=0.0)] = 3600.0


class Auth(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How each send proves who we are.

    - ``none``; ``basic`` (``username``, ``password``); ``bearer`` (``token``, or a ``login``);
    - ``header``: ``name: value`` (an API key header; with ``login``, ``value`` may use ``{token}``);
    - ``query``: ``?name=value`` on every send's path;
    - ``hmac``: ``header`` = encoding(HMAC-``algorithm``(``key``, ``message``)), where
      ``message`` may use ``{method}``, ``{path}``, ``{body}`` and ``{timestamp}`` (Unix
      seconds, also sent in ``timestamp_header``).
    """

    type: Literal["none", "basic", "bearer", "header", "query", "hmac"]
    username: str | None = None
    password: str | None = None
    token: str | None = None
    name: str | None = None
    value: str | None = None
    login: Login | None = None
    header: HeaderName | None = None
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    key: str | None = None
    message: str = "{timestamp}.{body}"
    timestamp_header: HeaderName | None = None
    prefix: str = ""


class SendKind(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The request for one kind of message; unset keys come from ``[send]``."""

    body: BodyTemplate
    path: str | None = None
    method: Method | None = None
    headers: dict[str, str] = {}
    # media only: our media kinds this channel takes, and their names on the wire
    # (absent: image, video, audio, document by their own names).
    kinds: dict[str, str] | None = None


class Send(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    format: Literal["json", "form"] = "json"
    method: Method = "POST"
    path: str
    headers: dict[str, str] = {}
    # A header carrying our message sid on every send, so a retried ambiguous send is
    # recognised by the channel (LINE's X-Line-Retry-Key takes it as a UUID: ``{sid_uuid}``).
    text: SendKind
    media: SendKind | None = None
    template: SendKind | None = None


class ErrorRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """An error rule: it matches when every condition it gives holds (first match wins)."""

    status: list[Annotated[int, msgspec.Meta(ge=100, le=599)]] = []
    code: list[str] = []  # the channel's error code (``answer.error_code``), as text
    contains: str | None = None  # a substring of the answer's body
    # transient (retry with backoff), rate_limited (slow down, honour Retry-After),
    # credentials (renew a login, or stop until the operator fixes them), permanent
    # (failed with twilio_code), duplicate (the channel already has this send: sent).
    class_: ErrorClass = msgspec.field(name="class")
    twilio_code: TwilioCode | None = None


class Answer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Reading a send's answer. Success is a 2xx where ``ok_path`` (if given) holds ``ok``."""

    id_path: str
    ok_path: str | None = None
    ok: list[str] = []
    error_code_path: str | None = None
    error_message_path: str | None = None
    # A duplicate (LINE's 409 on a reused retry key) names no new id: the channel's
    # request id header stands for it.
    duplicate_id_header: str | None = None


class Signature(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How the channel proves a webhook is its own.

    - ``hmac``: ``header`` = ``prefix`` + encoding(HMAC-``algorithm``(``key``, input)), where
      input is the raw body, or for ``input = "url+params"`` the full URL followed by every
      form parameter's name and value sorted by name (Twilio's ``X-Twilio-Signature``);
    - ``path``: the secret ``key`` is the last segment of the webhook URL;
    - ``none``: anyone may post (only for channels that sign nothing; logged at start).
    """

    scheme: Literal["hmac", "path", "none"]
    key: str | None = None
    header: HeaderName | None = None
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    input: Literal["body", "url+params"] = "body"


class When(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """An item is of this sort when ``path`` holds one of ``equals`` (or is present at all)."""

    path: str
    equals: list[str] = []


class StatusHook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    items: str = ""  # path of the list of items; "": the document is one item
    when: When | None = None
    id: str
    status: str
    # The channel's status names -> Twilio's (sent, delivered, read, failed, undelivered);
    # a name mapped to "" is understood and ignored (e.g. an intermediate state).
    map: dict[str, str]
    recipient: str | None = None
    error_code: str | None = None
    # The channel's error codes -> Twilio's; others fail with default_twilio_code.
    error_codes: dict[str, TwilioCode] = {}
    default_twilio_code: TwilioCode = 30008
    # The channel's error codes are Twilio's own (an upstream Twilio account): passed on as they are.
    twilio_codes: bool = False
    # A status that implies an earlier one the channel may skip (WhatsApp: read implies delivered):
    # the implied one is applied first.
    implies: dict[str, Literal["sent", "delivered"]] = {}


class InboundHook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    items: str = ""
    when: When | None = None
    id: str
    sender: str
    text: str | None = None
    kind: str | None = None
    # The channel's message types -> ours (text, image, video, audio, document, sticker, location);
    # a type not here is stored with its own name and no media.
    kinds: dict[str, str] = {}
    media_id: str | None = None
    media_type: str | None = None
    # Our kinds whose message carries a file at media_id (a LINE sticker names a sticker, no file).
    media_kinds: frozenset[Literal["image", "video", "audio", "document", "sticker"]] = frozenset(
        {"image", "video", "audio", "document", "sticker"}
    )
    timestamp: str | None = None
    # Unix seconds, milliseconds, or an ISO date and time (UTC unless it says otherwise).
    timestamp_unit: Literal["s", "ms", "datetime"] = "s"
    profile_name: str | None = None
    reply_to: str | None = None


class Webhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    format: Literal["json", "form"] = "json"
    signature: Signature
    status: StatusHook | None = None
    inbound: InboundHook | None = None
    # What an authentic delivery is answered (e.g. an empty TwiML document).
    ack_body: str = ""
    ack_content_type: str = "text/plain"


class SimAnswer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """An answer the simulator gives: status, headers and a body template (``{id}``, ``{to}``...):
    a table is sent as JSON, a string as it is."""

    status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 200
    headers: dict[str, str] = {}
    body: BodyTemplate | str = ""


class Simulated(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What the simulator serves for this kind, in the channel's own shapes (real payloads as data).

    Answers: ``accepted`` (a send taken; ``{id}`` is the new message id), ``invalid_request``
    (no kind of the spec matches it), ``invalid_recipient`` (not on the channel),
    ``rate_limited``, ``unauthorized``, ``duplicate`` (a retry key seen before). Documents:
    ``status_document``/``inbound_document`` are the channel's recorded payloads the
    simulator writes each status or message into, at the paths ``[webhook]`` reads
    (``envelope`` holds the keys around a list of ``items``).
    """

    accepted: SimAnswer
    invalid_request: SimAnswer
    invalid_recipient: SimAnswer
    rate_limited: SimAnswer
    unauthorized: SimAnswer
    duplicate: SimAnswer | None = None
    id_prefix: str = ""
    # The channel's status names the simulator walks an accepted message through.
    walk: list[str] = []
    # A recipient not on the channel is accepted and then reported so (SMS gateways do);
    # without failed_status it is refused at once with invalid_recipient.
    failed_status: str = ""
    failed_code: str = ""
    # For ``address = "id"`` kinds: ids starting with this are not on the channel.
    invalid_recipient_prefix: str = ""
    status_document: BodyTemplate = {}
    inbound_document: BodyTemplate = {}
    envelope: BodyTemplate = {}


class Spec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    kind: Kind
    description: str = ""
    # The address prefix of this channel in the Twilio API ("whatsapp:", "line:"; "" for SMS).
    prefix: Annotated[str, msgspec.Meta(pattern=r"^([a-z][a-z0-9-]{0,19}:)?$")] = ""
    # phone: recipients are E.164; id: recipients match recipient_pattern (a LINE user id).
    address: Literal["phone", "id"] = "phone"
    recipient_pattern: str | None = None
    base_url: str | None = None
    # Where inbound media ``{media_id}`` is fetched with the number's credentials (the file itself).
    media_path: str | None = None
    sources: list[str] = []
    settings: dict[Name, Setting] = {}
    limits: Limits = Limits()
    auth: Auth = Auth(type="none")
    send: Send
    answer: Answer
    errors: list[ErrorRule] = []
    webhook: Webhook | None = None
    simulator: Simulated | None = None
