"""The templates file: what a WhatsApp template is, and reading ``[[templates]]`` from TOML.

Vocabulary, apart from the registry (``dispatcher.messages.templates``) that keeps
and matches templates at run time: ``check-config`` (``dispatcher.config``) reads a
templates file with it without depending on the Messages resource.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Final

import msgspec

MAX_TEMPLATE_BODY: Final = 1024  # WhatsApp's limit of a template body, placeholders filled in
PLACEHOLDER: Final = re.compile(r"\{\{\s*([0-9]+)\s*\}\}")

ContentSid = Annotated[str, msgspec.Meta(pattern=r"^HX[0-9a-fA-F]{32}$")]
AccountSid = Annotated[str, msgspec.Meta(pattern=r"^AC[0-9a-fA-F]{32}$")]
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,512}$")]
Language = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})?$")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Body = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEMPLATE_BODY)]


class Template(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    sid: ContentSid
    account: AccountSid
    namespace: NonEmpty
    name: Name
    language: Language
    body: Body


class NewTemplate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An admin POST: like Template, the sid optional."""

    account: AccountSid
    namespace: NonEmpty
    name: Name
    language: Language
    body: Body
    sid: ContentSid | None = None


class TemplatesFile(msgspec.Struct, forbid_unknown_fields=True):
    templates: list[Template] = []


class TemplateError(ValueError):
    """A template definition that cannot be used (bad placeholders, duplicate sid)."""


def placeholders(body: str) -> int:
    """How many placeholders ``body`` has; they must be {{1}}..{{n}}, each once, in any order."""
    found = [int(m.group(1)) for m in PLACEHOLDER.finditer(body)]
    if sorted(found) != list(range(1, len(found) + 1)):
        raise TemplateError(f"placeholders must be {{{{1}}}}..{{{{n}}}}, each once; found {found}")
    return len(found)


def load_file(path: str | os.PathLike[str]) -> list[Template]:
    """Templates from a TOML file; ValueError naming the file and the problem."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise TemplateError(f"cannot read templates file {os.fspath(path)}: {exc.strerror}") from exc
    try:
        templates = msgspec.toml.decode(text, type=TemplatesFile).templates
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TemplateError(f"{os.fspath(path)}: {exc}") from exc
    for i, t in enumerate(templates):
        try:
            placeholders(t.body)
        except TemplateError as exc:
            raise TemplateError(f"{os.fspath(path)}: templates[{i}].body: {exc}") from exc
    return templates
