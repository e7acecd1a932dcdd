"""Twilio Content ``types`` <-> WhatsApp template components (reference §3.3, §1.2).

``to_template``: what ``POST /v1/Content/{sid}/ApprovalRequests/whatsapp`` submits to Meta for a
Content resource: its richest WhatsApp type (``whatsapp/authentication``,
``twilio/call-to-action``, ``twilio/quick-reply``, ``twilio/media``, ``twilio/text``) as
components, Twilio's variables renumbered the way Meta wants them ({{1}}..{{n}} in the
body in order of appearance, a URL button's one variable as its {{1}}), the Content's
``variables`` as Meta's required examples, and how a send maps back: the ContentVariables
key of each slot (``keymap``), and the slots the Content fixes (a media link, a quick
reply's id, a copy code: ``fixed``).

``to_types``: a template synced from Meta shown as Content ``types``, so the Content API
lists every template of the account's WABAs, not only those authored here.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from dispatcher.core import media
from dispatcher.core.wa_template import PLACEHOLDER, Button, Component, Example, WaTemplate, component, slots

KNOWN_TYPES: Final = (
    "twilio/text",
    "twilio/media",
    "twilio/quick-reply",
    "twilio/call-to-action",
    "whatsapp/authentication",
)
# The type submitted to WhatsApp, when a Content has several: the richest first.
_PREFERENCE: Final = (
    "whatsapp/authentication",
    "twilio/call-to-action",
    "twilio/quick-reply",
    "twilio/media",
    "twilio/text",
)
_HEADER_FORMATS: Final = {"image": "IMAGE", "video": "VIDEO", "document": "DOCUMENT"}


class ContentError(ValueError):
    """A Content resource that cannot be stored or submitted; the message says what to change."""


@attrs.frozen
class Submission:
    """A Content resource as a WhatsApp template, and how its sends fill it."""

    content_type: str
    category: str
    components: list[Component]
    keymap: dict[str, str]
    fixed: dict[str, str]


def check(types: dict[str, Any]) -> None:
    """The shape of each type we read; unknown types are kept as given (Twilio has many more)."""
    if not isinstance(types, dict) or not types:
        raise ContentError("types: give at least one content type, e.g. {'twilio/text': {'body': '...'}}")
    if not any(t in types for t in KNOWN_TYPES):
        raise ContentError(f"types: none of {', '.join(KNOWN_TYPES)}")
    for name in KNOWN_TYPES:
        value = types.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ContentError(f"types.{name}: expected an object")
        if name != "whatsapp/authentication" and not _text(value.get("body")):
            raise ContentError(f"types.{name}.body: required")
        if name == "twilio/media":
            found = value.get("media")
            if not isinstance(found, list) or len(found) != 1 or not _text(found[0]):
                raise ContentError(f"types.{name}.media: one media URL")
        if name in ("twilio/quick-reply", "twilio/call-to-action"):
            actions = value.get("actions")
            if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
                raise ContentError(f"types.{name}.actions: at least one action object")
            if len(actions) > 10:
                raise ContentError(f"types.{name}.actions: at most 10")


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def to_template(types: dict[str, Any], variables: dict[str, str], category: str) -> Submission:
    """The WhatsApp template of a Content's ``types`` (see the module docstring)."""
    chosen = next((t for t in _PREFERENCE if t in types), None)
    if chosen is None:
        raise ContentError(f"no content type WhatsApp templates take ({', '.join(KNOWN_TYPES)})")
    value: dict[str, Any] = types[chosen]
    if chosen == "whatsapp/authentication":
        return _authentication(value)
    keymap: dict[str, str] = {}
    fixed: dict[str, str] = {}
    components: list[Component] = []
    if chosen == "twilio/media":
        link = str(value["media"][0])
        kind = media.classify(PLACEHOLDER.sub("x", link)).kind
        fmt = _HEADER_FORMATS.get(kind)
        if fmt is None:
            raise ContentError(f"types.twilio/media.media: a {kind} cannot head a WhatsApp template")
        components.append(Component(type="HEADER", format=fmt, example=Example(header_handle=[link])))
        fixed["header"] = link
    components.append(_body(str(value["body"]), variables, keymap))
    if chosen in ("twilio/quick-reply", "twilio/call-to-action"):
        components.append(_buttons(chosen, value["actions"], variables, keymap, fixed))
    return Submission(chosen, category.upper(), components, keymap, fixed)


def _body(text: str, variables: dict[str, str], keymap: dict[str, str]) -> Component:
    names = list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(text)))
    renumbered = {name: str(i) for i, name in enumerate(names, 1)}
    missing = [n for n in names if n not in variables]
    if missing:
        raise ContentError(f"variables: give a sample value for {{{{{missing[0]}}}}} (Meta reviews with it)")
    for name, number in renumbered.items():
        keymap[number] = name
    meta_text = PLACEHOLDER.sub(lambda m: "{{" + renumbered[m.group(1)] + "}}", text)
    example = Example(body_text=[[variables[n] for n in names]]) if names else None
    return Component(type="BODY", text=meta_text, example=example)


def _buttons(
    kind: str,
    actions: list[dict[str, Any]],
    variables: dict[str, str],
    keymap: dict[str, str],
    fixed: dict[str, str],
) -> Component:
    buttons: list[Button] = []
    for i, action in enumerate(actions):
        where = f"types.{kind}.actions[{i}]"
        title = str(action.get("title") or "")
        action_type = str(
            action.get("type") or ("QUICK_REPLY" if kind == "twilio/quick-reply" else "")
        ).upper()
        if action_type != "COPY_CODE" and not title:
            raise ContentError(f"{where}.title: required")
        if len(title) > 25:
            raise ContentError(f"{where}.title: at most 25 characters (WhatsApp's button label)")
        if action_type == "QUICK_REPLY":
            buttons.append(Button(type="QUICK_REPLY", text=title))
            if action.get("id"):
                fixed[f"button.{i}"] = str(action["id"])
        elif action_type == "URL":
            url = str(action.get("url") or "")
            names = [m.group(1) for m in PLACEHOLDER.finditer(url)]
            if len(names) > 1 or (names and not url.rstrip().endswith("}}")):
                raise ContentError(f"{where}.url: at most one variable, at the end of the URL")
            if names:
                if names[0] not in variables:
                    raise ContentError(
                        f"variables: give a sample value for {{{{{names[0]}}}}} (Meta reviews with it)"
                    )
                keymap[f"button.{i}"] = names[0]
                found = PLACEHOLDER.search(url)
                assert found is not None
                sample = url[: found.start()] + variables[names[0]]
                url = url[: found.start()] + "{{1}}"
                buttons.append(Button(type="URL", text=title, url=url, example=[sample]))
            else:
                buttons.append(Button(type="URL", text=title, url=url))
        elif action_type == "PHONE_NUMBER":
            buttons.append(
                Button(type="PHONE_NUMBER", text=title, phone_number=str(action.get("phone") or ""))
            )
        elif action_type == "COPY_CODE":
            code = str(action.get("code") or "")
            if not code:
                raise ContentError(f"{where}.code: required")
            buttons.append(
                Button(
                    type="COPY_CODE", example=PLACEHOLDER.sub(lambda m: variables.get(m.group(1), ""), code)
                )
            )
            fixed[f"button.{i}"] = code
        else:
            raise ContentError(f"{where}.type: {action_type or 'none'} is not a WhatsApp template button")
    return Component(type="BUTTONS", buttons=buttons)


def _authentication(value: dict[str, Any]) -> Submission:
    components = [
        Component(type="BODY", add_security_recommendation=bool(value.get("add_security_recommendation")))
    ]
    minutes = value.get("code_expiration_minutes")
    if minutes is not None:
        if not isinstance(minutes, int) or not 1 <= minutes <= 90:
            raise ContentError("types.whatsapp/authentication.code_expiration_minutes: 1 to 90")
        components.append(Component(type="FOOTER", code_expiration_minutes=minutes))
    actions = value.get("actions") or [{"type": "COPY_CODE", "copy_code_text": "Copy code"}]
    text = (
        str(actions[0].get("copy_code_text") or "Copy code") if isinstance(actions[0], dict) else "Copy code"
    )
    components.append(
        Component(type="BUTTONS", buttons=[Button(type="OTP", otp_type="COPY_CODE", text=text)])
    )
    return Submission("whatsapp/authentication", "AUTHENTICATION", components, {}, {})


def to_types(template: WaTemplate) -> tuple[dict[str, Any], dict[str, str]]:
    """A synced template as Content ``types`` and ``variables`` (each slot's key and Meta's example)."""
    body = component(template, "BODY")
    text = (body.text if body is not None else None) or ""
    variables = {s.key: s.example for s in slots(template)}
    types: dict[str, Any] = {"twilio/text": {"body": text}}
    if template.category.upper() == "AUTHENTICATION":
        footer = component(template, "FOOTER")
        buttons = component(template, "BUTTONS")
        label = buttons.buttons[0].text if buttons is not None and buttons.buttons else "Copy code"
        types["whatsapp/authentication"] = {
            "add_security_recommendation": bool(body is not None and body.add_security_recommendation),
            "code_expiration_minutes": footer.code_expiration_minutes if footer is not None else None,
            "actions": [{"type": "COPY_CODE", "copy_code_text": label}],
        }
        return types, variables
    header = component(template, "HEADER")
    if header is not None and (header.format or "TEXT").upper() in ("IMAGE", "VIDEO", "DOCUMENT", "GIF"):
        types["twilio/media"] = {"body": text, "media": ["{{header}}"]}
    buttons = component(template, "BUTTONS")
    listed = buttons.buttons or [] if buttons is not None else []
    if listed and all(b.type.upper() == "QUICK_REPLY" for b in listed):
        types["twilio/quick-reply"] = {
            "body": text,
            "actions": [{"title": b.text, "id": b.text} for b in listed],
        }
    elif listed:
        types["twilio/call-to-action"] = {
            "body": text,
            "actions": [_action(i, b) for i, b in enumerate(listed)],
        }
    return types, variables


def _action(index: int, button: Button) -> dict[str, Any]:
    kind = button.type.upper()
    if kind == "URL":
        url = PLACEHOLDER.sub(f"{{{{button.{index}}}}}", button.url or "")
        return {"type": "URL", "title": button.text, "url": url}
    if kind == "PHONE_NUMBER":
        return {"type": "PHONE_NUMBER", "title": button.text, "phone": button.phone_number}
    if kind == "COPY_CODE":
        return {"type": "COPY_CODE", "title": button.text or "Copy code", "code": f"{{{{button.{index}}}}}"}
    return {"type": kind, "title": button.text}
