"""A WhatsApp message template as Meta keeps it, and the values a send of it takes.

Vocabulary shared by the sync (``GET /{waba}/message_templates``), the catalog in
LMDB, the create rules and the Content API. A template's ``components`` are read
as Graph returns them (reference §1.2: ``HEADER`` text or media, ``BODY``,
``FOOTER``, ``BUTTONS``); fields we do not use are skipped, never refused, so a
template Meta grows new options for still syncs.

From the components come the template's *slots*: every value a send must (or may)
give, each under the ``ContentVariables`` key that fills it:

=====================  ==============================================================
``"1"``, ``"2"``...    body placeholders ``{{1}}``.. of a positional template
``"first_name"``       body placeholders ``{{first_name}}`` of a named template
``"header.1"``         a text header's placeholder (``"header.<name>"`` when named)
``"header"``           a media header: the https link of the image, video or document
``"button.<i>"``       button ``i`` (from 0): a URL button's suffix, a quick reply's
                       payload (optional: WhatsApp then sends the button's text), a
                       copy-code button's code
=====================  ==============================================================

An authentication template takes its one-time code as ``"1"`` (body and OTP button alike).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, Literal

import attrs
import msgspec

# Meta's placeholders: {{1}} (positional) or {{first_name}} (named: lowercase, digits, underscores).
PLACEHOLDER: Final = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")
STATUSES: Final = (
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "FLAGGED",
    "IN_APPEAL",
    "REINSTATED",
    "DELETED",
    "PENDING_DELETION",
    "LIMIT_EXCEEDED",
    "ARCHIVED",
    "UNARCHIVED",
    "LOCKED",
)
SENDABLE: Final = "APPROVED"
MEDIA_FORMATS: Final = {"IMAGE": "image", "VIDEO": "video", "DOCUMENT": "document", "GIF": "video"}
# Meta's limits on what a send fills in (reference §1.2, §1.6).
MAX_BODY: Final = 1024  # the body, placeholders filled in
MAX_HEADER_TEXT: Final = 60  # a text header, placeholder filled in
MAX_URL: Final = 2000  # a URL button's URL, suffix appended
MAX_PAYLOAD: Final = 256  # a quick reply's payload (pywa)
MAX_COUPON: Final = 15  # a copy-code button's code
MAX_OTP: Final = 15  # an authentication template's one-time code


class NamedExample(msgspec.Struct, omit_defaults=True):
    param_name: str
    example: str = ""


class Example(msgspec.Struct, omit_defaults=True):
    header_text: list[str] | None = None
    header_text_named_params: list[NamedExample] | None = None
    header_handle: list[str] | None = None
    body_text: list[list[str]] | None = None
    body_text_named_params: list[NamedExample] | None = None


class Button(msgspec.Struct, omit_defaults=True):
    type: str  # QUICK_REPLY | URL | PHONE_NUMBER | COPY_CODE | OTP | FLOW | ...
    text: str = ""
    url: str | None = None
    phone_number: str | None = None
    example: list[str] | str | None = None
    otp_type: str | None = None  # OTP buttons: COPY_CODE | ONE_TAP | ZERO_TAP


class Component(msgspec.Struct, omit_defaults=True):
    type: str  # HEADER | BODY | FOOTER | BUTTONS
    format: str | None = None  # a header's: TEXT | IMAGE | VIDEO | DOCUMENT | GIF | LOCATION | PRODUCT
    text: str | None = None
    example: Example | None = None
    buttons: list[Button] | None = None
    add_security_recommendation: bool | None = None  # authentication body
    code_expiration_minutes: int | None = None  # authentication footer


class QualityScore(msgspec.Struct, omit_defaults=True):
    score: str = "UNKNOWN"  # GREEN | YELLOW | RED | UNKNOWN
    date: int | None = None


class GraphTemplate(msgspec.Struct, omit_defaults=True):
    """One template as ``GET /{waba}/message_templates`` lists it."""

    id: str
    name: str
    language: str
    status: str
    category: str = ""
    components: list[Component] = []
    parameter_format: str = "POSITIONAL"
    quality_score: QualityScore | None = None
    rejected_reason: str | None = None
    previous_category: str | None = None


class WaTemplate(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A template of a WABA as the catalog keeps it (LMDB, msgpack): Meta's fields and ours."""

    sid: str  # HX...: stable for (waba, name, language)
    waba: str
    id: str  # Meta's template id
    name: str
    language: str
    status: str
    category: str = ""
    parameter_format: str = "POSITIONAL"
    components: list[Component] = []
    quality: str = "UNKNOWN"
    rejected_reason: str | None = None
    previous_category: str | None = None
    # Why it is not sendable, as Meta said (a pause's title, a rejection's reason).
    status_reason: str | None = None
    # When Meta last changed it as far as we know (the webhook's ``time``, or the sync's).
    changed_at: float = 0.0
    synced_at: float = 0.0
    # Authored through the Content API: the ContentVariables key of each slot (by slot key), the
    # Content's default variables (by ContentVariables key), and slots whose value the Content
    # fixes (by slot key; may hold {{key}} placeholders filled from the variables, e.g. a media
    # link or a quick reply's id).
    keymap: dict[str, str] = {}
    defaults: dict[str, str] = {}
    fixed: dict[str, str] = {}

    @property
    def sendable(self) -> bool:
        return self.status == SENDABLE


template_encoder: Final = msgspec.msgpack.Encoder()
template_decoder: Final = msgspec.msgpack.Decoder(WaTemplate)


def normalize_language(code: str) -> str:
    """Meta's webhook examples write ``en-US`` where the API has ``en_US``."""
    return code.replace("-", "_")


def stable_sid(waba: str, name: str, language: str) -> str:
    """The ``HX`` ContentSid of a synced template: the same for the same (WABA, name, language),
    across syncs, restarts and daemons, and unlike any other's."""
    digest = hashlib.sha256(f"{waba}\x00{name}\x00{normalize_language(language)}".encode()).hexdigest()
    return "HX" + digest[:32]


SlotKind = Literal["text", "image", "video", "document", "payload", "url", "coupon_code", "otp"]


@attrs.frozen
class Slot:
    """One value a send of the template takes."""

    key: str  # the ContentVariables key (before an authored template's keymap)
    component: Literal["header", "body", "button"]
    kind: SlotKind
    name: str = ""  # Meta's parameter_name (named templates), else ""
    index: int = 0  # the button's index
    example: str = ""
    required: bool = True


def placeholders(text: str | None) -> list[str]:
    """The placeholder names of ``text`` in order of appearance, each once."""
    return list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(text or "")))


def component(template: WaTemplate, kind: str) -> Component | None:
    return next((c for c in template.components if c.type.upper() == kind), None)


def slots(template: WaTemplate) -> list[Slot]:
    """Every value a send of ``template`` takes, header first, in Meta's order."""
    named = template.parameter_format.upper() == "NAMED"
    out: list[Slot] = []
    header = component(template, "HEADER")
    if header is not None:
        fmt = (header.format or "TEXT").upper()
        if fmt == "TEXT":
            examples = _header_examples(header)
            for i, name in enumerate(placeholders(header.text)):
                out.append(
                    Slot(
                        f"header.{name}",
                        "header",
                        "text",
                        name if named else "",
                        example=_at(examples, i, name),
                    )
                )
        elif fmt in MEDIA_FORMATS:
            out.append(Slot("header", "header", MEDIA_FORMATS[fmt]))  # type: ignore[arg-type]
    body = component(template, "BODY")
    authentication = template.category.upper() == "AUTHENTICATION"
    if authentication:
        out.append(Slot("1", "body", "otp", example="123456"))
    elif body is not None:
        examples = _body_examples(body)
        for i, name in enumerate(placeholders(body.text)):
            out.append(Slot(name, "body", "text", name if named else "", example=_at(examples, i, name)))
    buttons = component(template, "BUTTONS")
    for index, button in enumerate(buttons.buttons or [] if buttons is not None else []):
        kind = button.type.upper()
        example = button.example[0] if isinstance(button.example, list) and button.example else ""
        if authentication and (
            kind == "URL" or (kind == "OTP" and (button.otp_type or "").upper() != "ZERO_TAP")
        ):
            out.append(Slot("1", "button", "otp", index=index))  # the one-time code, as in the body
        elif kind == "URL" and placeholders(button.url):
            out.append(Slot(f"button.{index}", "button", "url", index=index, example=example))
        elif kind == "QUICK_REPLY":
            out.append(Slot(f"button.{index}", "button", "payload", index=index, required=False))
        elif kind == "COPY_CODE":
            code = button.example if isinstance(button.example, str) else example
            out.append(Slot(f"button.{index}", "button", "coupon_code", index=index, example=code))
    return out


def _header_examples(header: Component) -> dict[str, str] | list[str]:
    example = header.example
    if example is None:
        return []
    if example.header_text_named_params:
        return {p.param_name: p.example for p in example.header_text_named_params}
    return example.header_text or []


def _body_examples(body: Component) -> dict[str, str] | list[str]:
    example = body.example
    if example is None:
        return []
    if example.body_text_named_params:
        return {p.param_name: p.example for p in example.body_text_named_params}
    return example.body_text[0] if example.body_text else []


def _at(examples: dict[str, str] | list[str], i: int, name: str) -> str:
    if isinstance(examples, dict):
        return examples.get(name, "")
    return examples[i] if i < len(examples) else ""


def render(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``{{key}}`` replaced by its value (an unknown key is left as it is)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
