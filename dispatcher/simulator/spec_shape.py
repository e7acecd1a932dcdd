"""A spec's send requests read backwards: which kind a request is, and the message it carries.

The gateway fills a spec's templates (``channels.spec_channel``); the simulator takes
the same templates apart, once per number: each leaf of a body template is either a
literal the request must carry as it is (``type = "text"``, the number's ``api_key``),
a slot whose value the request carries at that place (``{to}`` at ``to``,
``{body}`` at ``messages[0].text``), or text mixed with slots, which must be present.
A request matches a kind when every literal is there with its value and every required
slot is present; the first kind that matches wins (text, media, template).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Final, final
from urllib.parse import parse_qsl

import attrs
import msgspec

from dispatcher.core.channelspec import paths, template
from dispatcher.core.channelspec.model import SendKind, Spec

KINDS: Final = ("text", "media", "template")
_SLOT: Final = re.compile(r"\{\{|\}\}|\{([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)?)\??\}")


@final
@attrs.frozen
class Shape:
    """One kind's request: its method and path pattern, literal leaves and slots of its body."""

    kind: str
    method: str
    path: re.Pattern[str]
    literals: tuple[tuple[paths.Path, str], ...]
    slots: Mapping[str, tuple[paths.Path, bool]]  # name -> (where, optional)
    present: tuple[paths.Path, ...]  # mixed text: must be there
    # Literals that are secret settings (Vonage's api_secret in the body): wrong, the request is
    # unauthorized rather than malformed.
    secrets: tuple[tuple[paths.Path, str], ...] = ()


def _leaves(tree: object, at: str) -> list[tuple[str, object]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{at}.{k}" if at else k)]
    if isinstance(tree, list):
        return [leaf for i, v in enumerate(tree) for leaf in _leaves(v, f"{at}[{i}]")]
    return [(at, tree)]


def _path_pattern(text: str, constants: Mapping[str, object]) -> re.Pattern[str]:
    out = []
    pos = 0
    for match in _SLOT.finditer(text):
        out.append(re.escape(text[pos : match.start()]))
        pos = match.end()
        if match[0] in ("{{", "}}"):
            out.append(re.escape(match[0][0]))
        elif match[1] in constants:
            out.append(re.escape(str(constants[match[1]])))
        else:
            out.append(f"(?P<{match[1]}>[^/?]+)")
    out.append(re.escape(text[pos:]))
    return re.compile("^" + "".join(out) + "$")


def shapes(spec: Spec, constants: Mapping[str, object]) -> list[Shape]:
    """The kinds of ``spec`` as they arrive, with a number's ``constants`` (settings, from) folded in."""
    out: list[Shape] = []
    hidden = {name for name, setting in spec.settings.items() if setting.secret}
    for label in KINDS:
        kind: SendKind | None = getattr(spec.send, label)
        if kind is None:
            continue
        literals: list[tuple[paths.Path, str]] = []
        secrets: list[tuple[paths.Path, str]] = []
        slots: dict[str, tuple[paths.Path, bool]] = {}
        present: list[paths.Path] = []
        for at, leaf in _leaves(kind.body, ""):
            where = paths.parse(at)
            if not isinstance(leaf, str):
                literals.append((where, _text(leaf)))
                continue
            value = template.compile_text(leaf, constants)
            found = template.slots(leaf)
            free = [(n, opt) for n, opt in found if n not in constants]
            if not free:
                rendered = value({})
                if rendered is not template.MISSING:
                    secret = any(name.removeprefix("setting.") in hidden for name, _ in found)
                    (secrets if secret else literals).append((where, str(rendered)))
            elif len(found) == 1 and leaf.strip() == leaf and _SLOT.fullmatch(leaf):
                name, optional = free[0]
                slots[name] = (where, optional)
            else:
                present.append(where)
        out.append(
            Shape(
                kind=label,
                method=kind.method or spec.send.method,
                path=_path_pattern(kind.path or spec.send.path, constants),
                literals=tuple(literals),
                secrets=tuple(secrets),
                slots=slots,
                present=tuple(present),
            )
        )
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def decode(body: bytes, form: bool) -> object:
    """A request body as builtins (a form as a dict of its first values); None if unreadable."""
    if form:
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            return None
        out: dict[str, str] = {}
        for key, value in pairs:
            out.setdefault(key, value)
        return out
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


class WrongSecretError(Exception):
    """The request is of this kind but carries a wrong secret setting in its body."""


def match(shape: Shape, method: str, path: str, doc: object) -> dict[str, object] | None:
    """The slot values of a request if it is this kind, else None.

    Raises:
        WrongSecretError: it is this kind, with a secret of the body (api_secret) that is not the number's.
    """
    if method != shape.method:
        return None
    found = shape.path.match(path)
    if found is None:
        return None
    values: dict[str, object] = dict(found.groupdict())
    for where, literal in shape.literals:
        value = where.get(doc)
        if value is None or _text(value) != literal:
            return None
    for where in shape.present:
        if where.get(doc) in (None, ""):
            return None
    for name, (where, optional) in shape.slots.items():
        value = where.get(doc)
        if value is None or value == "":
            if not optional:
                return None
            continue
        values[name] = value
    for where, secret in shape.secrets:
        value = where.get(doc)
        if value is None or not hmac.compare_digest(_text(value).encode(), secret.encode()):
            raise WrongSecretError(where.text)
    return values
