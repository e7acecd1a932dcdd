"""``ContentVariables`` -> the send of a synced WhatsApp template, refused at create where Meta would.

Each slot of the template (``core.wa_template.slots``: header text or media, body
placeholders positional or named, URL suffixes, quick-reply payloads, copy codes, an
authentication code) takes the variable under its key; what Meta refuses later is
refused here with Twilio's code, nothing stored:

- 21656: a variable missing, empty, naming no slot, or a text parameter WhatsApp cannot
  carry (a newline, a tab, more than 4 consecutive spaces: Meta's 132018);
- 21658: a value over its limit (a text variable over 1600 characters, the filled body over
  1024, a text header over 60, a URL over 2000, a payload over 256, a code over 15);
- 21620: a header media link that is not a usable http(s) URL.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from dispatcher.core import media
from dispatcher.core.models import SendComponent, SendParam, TemplateSend
from dispatcher.core.twilio import TwilioError
from dispatcher.core.wa_template import (
    MAX_BODY,
    MAX_COUPON,
    MAX_HEADER_TEXT,
    MAX_OTP,
    MAX_PAYLOAD,
    MAX_URL,
    PLACEHOLDER,
    Slot,
    WaTemplate,
    component,
    render,
    slots,
)

MAX_VARIABLE: Final = 1600  # Twilio's per-variable limit (21658)
# WhatsApp refuses a text parameter with a newline or tab or more than 4 consecutive spaces
# (Cloud API #132018, "Param text cannot have new-line/tab characters or more than 4
# consecutive spaces"; Twilio reports it as 63013).
UNSENDABLE_PARAM: Final = re.compile(r"[\r\n\t]| {5}")
_SUB_TYPES: Final = {"url": "url", "payload": "quick_reply", "coupon_code": "copy_code", "otp": "url"}
variables_decoder: Final = msgspec.json.Decoder(dict[str, str | int | float])


def parse_variables(raw: str | None) -> dict[str, str]:
    """``ContentVariables``: a JSON object of strings (numbers are taken as their text)."""
    if raw is None or not raw.strip():
        return {}
    try:
        decoded = variables_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TwilioError(
            400,
            21656,
            f"The ContentVariables parameter is invalid: expected a JSON object of strings ({exc}).",
        ) from exc
    return {key: str(value) for key, value in decoded.items()}


def resolve(template: WaTemplate, raw: str | None) -> tuple[TemplateSend, str]:
    """The send of ``template`` with ``raw`` ContentVariables, and its body as the customer reads it."""
    given = parse_variables(raw)
    known = {**template.defaults, **given}
    values: dict[Slot, str] = {}
    used: set[str] = set()
    for slot in slots(template):
        var = template.keymap.get(slot.key, slot.key)
        pattern = template.fixed.get(slot.key)
        if pattern is not None:
            value = render(pattern, known)
            missing = [m.group(1) for m in PLACEHOLDER.finditer(value)]
            if missing:
                raise _missing(missing[0])
            used.update(m.group(1) for m in PLACEHOLDER.finditer(pattern))
        elif var in known:
            value = known[var]
            used.add(var)
        elif not slot.required:
            continue
        else:
            raise _missing(var, slot)
        values[slot] = _checked(slot, var, value)
    unknown = sorted(set(given) - used)
    if unknown:
        names = sorted({template.keymap.get(s.key, s.key) for s in slots(template)})
        raise TwilioError(
            400,
            21656,
            f"The ContentVariables parameter names unknown variables: {unknown}; "
            f"the template takes {names or 'none'}.",
        )
    body = _rendered_body(template, values)
    if len(body) > MAX_BODY:
        raise TwilioError(
            400,
            21658,
            f"The ContentVariables make the template body {len(body)} characters long: "
            f"WhatsApp takes at most {MAX_BODY}.",
        )
    _check_header(template, values)
    _check_urls(template, values)
    send = TemplateSend(
        content_sid=template.sid,
        namespace="",
        name=template.name,
        language=template.language,
        components=_components(values),
    )
    return send, body


def _missing(var: str, slot: Slot | None = None) -> TwilioError:
    what = f" (the {slot.component} {slot.kind})" if slot is not None and slot.component != "body" else ""
    return TwilioError(400, 21656, f"The ContentVariables parameter is missing a value for '{var}'{what}.")


def _checked(slot: Slot, var: str, value: str) -> str:
    if not value.strip():
        raise TwilioError(400, 21656, f"The ContentVariables value for '{var}' is empty.")
    limits = {"payload": MAX_PAYLOAD, "coupon_code": MAX_COUPON, "otp": MAX_OTP, "url": MAX_URL}
    limit = limits.get(slot.kind, MAX_VARIABLE)
    if len(value) > limit:
        raise TwilioError(
            400, 21658, f"The ContentVariables value for '{var}' exceeds {limit} characters ({len(value)})."
        )
    if slot.kind in ("image", "video", "document"):
        try:
            media.check_url(value)
        except media.MediaUrlError as exc:
            raise TwilioError(400, 21620, f"The header media link for '{var}' is not usable: {exc}") from exc
        return value
    if slot.kind in ("url", "coupon_code", "otp") and any(c.isspace() for c in value):
        raise TwilioError(400, 21656, f"The ContentVariables value for '{var}' cannot hold spaces.")
    if UNSENDABLE_PARAM.search(value):
        raise TwilioError(
            400,
            21656,
            f"The ContentVariables value for '{var}' cannot be sent: WhatsApp template values "
            "hold no newlines or tabs and at most 4 consecutive spaces.",
        )
    return value


def _rendered_body(template: WaTemplate, values: dict[Slot, str]) -> str:
    body = component(template, "BODY")
    text = (body.text if body is not None else None) or ""
    if template.category.upper() == "AUTHENTICATION":
        otp = next((v for s, v in values.items() if s.kind == "otp"), "")
        return render(text, {"1": otp}) if text else f"{otp} is your verification code."
    by_name = {s.name or s.key: v for s, v in values.items() if s.component == "body"}
    return render(text, by_name)


def _check_header(template: WaTemplate, values: dict[Slot, str]) -> None:
    header = component(template, "HEADER")
    if header is None or (header.format or "TEXT").upper() != "TEXT" or not header.text:
        return
    header_values = {s.key.split(".", 1)[1]: v for s, v in values.items() if s.component == "header"}
    filled = render(header.text, header_values)
    if len(filled) > MAX_HEADER_TEXT:
        raise TwilioError(
            400,
            21658,
            f"The ContentVariables make the template header {len(filled)} characters long: "
            f"WhatsApp takes at most {MAX_HEADER_TEXT}.",
        )


def _check_urls(template: WaTemplate, values: dict[Slot, str]) -> None:
    buttons = component(template, "BUTTONS")
    for slot, value in values.items():
        if slot.kind != "url" or buttons is None or not buttons.buttons:
            continue
        url = buttons.buttons[slot.index].url or ""
        length = len(PLACEHOLDER.sub("", url, count=1)) + len(value)
        if length > MAX_URL:
            raise TwilioError(
                400, 21658, f"The button URL with '{slot.key}' is {length} characters: at most {MAX_URL}."
            )


def _components(values: dict[Slot, str]) -> list[SendComponent]:
    header = [_param(s, v) for s, v in values.items() if s.component == "header"]
    body = [_param(s, v) for s, v in values.items() if s.component == "body"]
    out: list[SendComponent] = []
    if header:
        out.append(SendComponent("header", header))
    if body:
        out.append(SendComponent("body", body))
    for slot, value in values.items():
        if slot.component == "button":
            out.append(SendComponent("button", [_param(slot, value)], _SUB_TYPES[slot.kind], slot.index))
    return out


def _param(slot: Slot, value: str) -> SendParam:
    if slot.kind in ("image", "video", "document", "payload", "coupon_code"):
        return SendParam(slot.kind, value)
    return SendParam("text", value, slot.name)
