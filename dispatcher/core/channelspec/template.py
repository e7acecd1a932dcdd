"""Templates with ``{placeholders}``, compiled once into closures (nothing is parsed per message).

A template string is literal text with ``{name}`` slots (``{{`` and ``}}`` are literal
braces). ``{name?}`` is optional: when its value is empty, the whole string is *missing*
and the key (or list item) holding it is left out of the body. A string that is one slot
and nothing else takes the value as it is (a list stays a list in a JSON body).

``check`` runs at spec load (names must be known to the template's place, errors name the
key); ``compile_text``/``compile_tree`` run once per number, folding the values known then
(settings, the number itself) into constants, so a send only fills the message's own slots.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, final
from urllib.parse import quote_plus

Values = Mapping[str, object]
Render = Callable[[Values], object]


@final
class _Missing:
    """The value of an optional slot left empty: its key or list item is dropped."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

_TOKEN: Final = re.compile(r"\{\{|\}\}|\{([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)?)(\??)\}|[{}]")


class TemplateError(ValueError):
    """A template that cannot be compiled: an unknown placeholder or a stray brace."""


def slots(text: str) -> list[tuple[str, bool]]:
    """The ``(name, optional)`` slots of ``text``.

    Raises:
        TemplateError: a brace that opens no valid slot.
    """
    found: list[tuple[str, bool]] = []
    for match in _TOKEN.finditer(text):
        token = match[0]
        if token in ("{{", "}}"):
            continue
        if match[1] is None:
            raise TemplateError(f"stray {token!r} in {text!r} (write {token * 2} for a literal brace)")
        found.append((match[1], bool(match[2])))
    return found


def check(template: object, allowed: frozenset[str], where: str) -> list[tuple[str, str]]:
    """Every slot used in ``template`` (a string or a tree of them) as ``(name, key)``, checked
    against ``allowed`` (``setting.*`` names are checked by the caller, who knows the settings).

    Raises:
        TemplateError: naming ``where`` (the key, with its position in the tree).
    """
    names: list[tuple[str, str]] = []
    if isinstance(template, str):
        try:
            found = slots(template)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        for name, _ in found:
            if name not in allowed and not name.startswith("setting."):
                known = ", ".join(sorted(allowed))
                raise TemplateError(f"{where}: unknown placeholder {{{name}}} (known here: {known})")
            names.append((name, where))
    elif isinstance(template, dict):
        for key, value in template.items():
            if "{" in key:
                names += check(key, allowed, f"{where} (the key {key!r})")
            names += check(value, allowed, f"{where}.{key}")
    elif isinstance(template, list):
        for i, value in enumerate(template):
            names += check(value, allowed, f"{where}[{i}]")
    elif not isinstance(template, int | float | bool):
        raise TemplateError(f"{where}: expected a string, number, boolean, table or array")
    return names


def _pieces(text: str, constants: Values) -> list[str | tuple[str, bool]]:
    """Literal text and slots, constants folded in, adjacent literals joined."""
    out: list[str | tuple[str, bool]] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        literal = text[pos : match.start()]
        pos = match.end()
        token = match[0]
        if token in ("{{", "}}"):
            literal += token[0]
            piece: str | tuple[str, bool] = ""
        else:
            name, optional = match[1], bool(match[2])
            if name in constants:
                value = constants[name]
                if optional and not value:
                    return [("", True)]  # always missing
                piece = "" if value is None else str(value)
            else:
                piece = (name, optional)
        for part in (literal, piece):
            if isinstance(part, str):
                if part:
                    if out and isinstance(out[-1], str):
                        out[-1] += part
                    else:
                        out.append(part)
            else:
                out.append(part)
    tail = text[pos:]
    if tail:
        if out and isinstance(out[-1], str):
            out[-1] += tail
        else:
            out.append(tail)
    return out


def compile_text(text: str, constants: Values) -> Render:
    """``text`` as a function of the send's values (``render(values)``)."""
    pieces = _pieces(text, constants)
    if pieces == [("", True)]:
        return lambda values: MISSING
    if not pieces:
        return lambda values: ""
    if len(pieces) == 1:
        only = pieces[0]
        if isinstance(only, str):
            return lambda values: only
        name, optional = only
        if optional:

            def optional_value(values: Values) -> object:
                value = values.get(name)
                return MISSING if value is None or value == "" or value == [] else value

            return optional_value
        return lambda values: values.get(name, "")

    def joined(values: Values) -> object:
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = values.get(piece[0])
            if value is None or value == "":
                if piece[1]:
                    return MISSING
                continue
            out.append(str(value))
        return "".join(out)

    return joined


def compile_tree(template: object, constants: Values) -> Render:
    """A body template (table, array, strings, numbers) as a function of the send's values.

    A table whose every placeholder-bearing value is missing is missing itself (dropped
    from its table or array): ``{ type = "text", text = "{caption?}" }`` in a list of
    messages goes only when there is a caption; so is an array of placeholders left empty
    (a template's ``components`` without parameters).
    """
    return _tree(template, constants)[0]


def _key(key: str, constants: Values) -> str | Render:
    """A table key: literal text, or a template (``"{media_kind}" = {...}``) rendered per send."""
    if "{" not in key and "}" not in key:
        return key
    render = compile_text(key, constants)
    fixed = render({}) if all(name in constants for name, _ in slots(key)) else None
    return str(fixed) if isinstance(fixed, str) else render


def _tree(template: object, constants: Values) -> tuple[Render, bool]:
    """The render of ``template`` and whether it holds placeholders once ``constants`` are in."""
    if isinstance(template, str):
        free = any(name not in constants for name, _ in slots(template))
        return compile_text(template, constants), free
    if isinstance(template, dict):
        fields = [(_key(key, constants), *_tree(value, constants)) for key, value in template.items()]
        holds = any(free for _, _, free in fields)
        # What no send changes is rendered once; a send copies it and fills in the rest.
        base: dict[str, object] = {}
        for key, render, free in fields:
            if not free and isinstance(key, str) and (value := render({})) is not MISSING:
                base[key] = value
        filled = [(key, render, free) for key, render, free in fields if free or not isinstance(key, str)]

        def table(values: Values) -> object:
            out = base.copy()
            live = False
            for key, render, free in filled:
                value = render(values)
                if value is not MISSING:
                    out[key if isinstance(key, str) else str(key(values))] = value
                    live = live or free
            return out if live or not holds else MISSING

        return table, holds
    if isinstance(template, list):
        items = [_tree(value, constants) for value in template]
        fills = any(free for _, free in items)

        def array(values: Values) -> object:
            out = [v for v in (render(values) for render, _ in items) if v is not MISSING]
            return MISSING if fills and not out else out

        return array, fills
    return (lambda values: template), False


def compile_form(template: Mapping[str, object], constants: Values) -> Callable[[Values], bytes]:
    """A flat body template as a form-encoded body: what no send changes is encoded once, a
    send quotes only its own values (``quote_plus`` was most of a form send's cost)."""
    pieces: list[bytes | tuple[bytes, Render]] = []
    for key, value in template.items():
        name = quote_plus(key).encode() + b"="
        text = value if isinstance(value, str) else _scalar(value)
        render = compile_text(text, constants)
        if any(slot not in constants for slot, _ in slots(text)):
            pieces.append((name, render))
        elif (fixed := render({})) is not MISSING:
            pieces.append(name + quote_plus(str(fixed)).encode())

    def form(values: Values) -> bytes:
        out: list[bytes] = []
        for piece in pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            elif (value := piece[1](values)) is not MISSING:
                out.append(piece[0] + quote_plus(str(value)).encode())
        return b"&".join(out)

    return form


def _scalar(value: object) -> str:
    """A number or boolean of a form template, as it goes on the wire (JSON's spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
