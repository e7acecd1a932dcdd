"""The WhatsApp template registry: ContentSid (HX...) -> the template a create sends.

Two sources: the templates of each ``[[wabas]]`` synced from Meta (``catalog``: status,
components, named or positional parameters; see ``template_values`` for how
ContentVariables fill them), and the file / admin templates below (a body with
{{1}}..{{n}}, for On-Prem namespaces and setups without a WABA token). A synced
template is sent only by numbers of its WABA, and only while Meta has it APPROVED:
any other status is refused at create (63027, saying which status and why).

Templates come from ``conf/templates.toml`` (``[messaging] templates_file``),
read at start, plus those added at run time through the admin API, which are
persisted in LMDB (``meta``, key ``template NUL sid``) and survive restarts.

Two ways a create request becomes a template send:

* ``ContentSid`` + ``ContentVariables`` (a JSON object ``{"1": "Ada", ...}``):
  the variables fill the body placeholders ``{{1}}``, ``{{2}}``, ... in order.
* Twilio's classic behaviour: a free-form ``Body`` that equals a registered
  template's body with values in the placeholders goes out as that template
  with those values (the most specific template wins if several match).

File format (one ``[[templates]]`` table each)::

    [[templates]]
    sid = "HX0123456789abcdef0123456789abcdef"
    account = "AC00000000000000000000000000000001"
    namespace = "cdb2df51_9816_c754_c5a4_64cdabdcad3e"
    name = "order_update"
    language = "en_US"
    body = "Hi {{1}}, your order {{2}} has shipped."

Admin API (``Authorization: Bearer <admin token>``), JSON in and out:

* ``GET /admin/v1/templates`` -> ``200 {"templates": [<template>, ...]}``,
  optionally ``?account=AC...``;
* ``POST /admin/v1/templates`` with a template object (``sid`` optional: one is
  generated) -> ``201 <template>``; ``400 {"error": "..."}`` if invalid,
  ``409`` if the sid exists.

A ``<template>`` has exactly the keys of the file format above.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Final, final

import attrs
import msgspec

from dispatcher.core.models import TemplateSend
from dispatcher.core.store import SEP, Store, WriteTxn
from dispatcher.core.template_file import (
    MAX_TEMPLATE_BODY,
    PLACEHOLDER,
    NewTemplate,
    Template,
    TemplateError,
    placeholders,
)
from dispatcher.core.twilio import TwilioError
from dispatcher.core.wa_template import WaTemplate
from dispatcher.messages import template_values
from dispatcher.messages.catalog import NOT_APPROVED, TemplateCatalog, not_sendable

MAX_VARIABLE: Final = template_values.MAX_VARIABLE
_UNSENDABLE_PARAM: Final = template_values.UNSENDABLE_PARAM
CONTENT_SID: Final = re.compile(r"^HX[0-9a-fA-F]{32}$")
_KEY_PREFIX: Final = b"template" + SEP


class TemplateList(msgspec.Struct):
    templates: list[Template]


class TemplateExistsError(TemplateError):
    """A template with that sid is already registered."""


_decoder: Final = msgspec.msgpack.Decoder(Template)
_encoder: Final = msgspec.msgpack.Encoder()
variables_decoder: Final = template_values.variables_decoder


@attrs.frozen
class _Compiled:
    template: Template
    count: int  # placeholders {{1}} .. {{count}}
    pattern: re.Pattern[str]  # the body with each placeholder as a capture group
    literal: int  # characters of fixed text: the more, the more specific


def _compile(template: Template) -> _Compiled:
    count = placeholders(template.body)
    pattern, literal, pos = [], 0, 0
    for m in PLACEHOLDER.finditer(template.body):
        text = template.body[pos : m.start()]
        pattern.append(re.escape(text))
        literal += len(text)
        # WhatsApp parameters carry no newlines or tabs.
        pattern.append(f"(?P<p{m.group(1)}>[^\\n\\t]+?)")
        pos = m.end()
    pattern.append(re.escape(template.body[pos:]))
    literal += len(template.body) - pos
    return _Compiled(template, count, re.compile("".join(pattern), re.DOTALL), literal)


def render(body: str, values: list[str]) -> str:
    """The template body with {{i}} replaced by ``values[i-1]``."""
    return PLACEHOLDER.sub(lambda m: values[int(m.group(1)) - 1], body)


@final
class TemplateRegistry:
    """Every known template, by sid and by account; reads are in memory."""

    def __init__(
        self,
        store: Store | None,
        configured: Iterable[Template] = (),
        *,
        catalog: TemplateCatalog | None = None,
    ) -> None:
        self._store = store
        self.catalog = catalog
        self._by_sid: dict[str, _Compiled] = {}
        self._by_account: dict[str, list[_Compiled]] = {}
        for template in configured:
            self._add(template)
        if store is not None:
            for _, raw in store.scan(b"meta", _KEY_PREFIX):
                stored = _decoder.decode(raw)
                if stored.sid not in self._by_sid:  # the file wins over an older admin copy
                    self._add(stored)

    def reload(self, configured: Iterable[Template]) -> None:
        """A reloaded templates file: its templates replace the old file's; admin-added ones stay."""
        fresh = TemplateRegistry(self._store, configured, catalog=self.catalog)
        self._by_sid, self._by_account = fresh._by_sid, fresh._by_account

    def _add(self, template: Template) -> None:
        if template.sid in self._by_sid:
            raise TemplateExistsError(f"template {template.sid} is defined twice")
        compiled = _compile(template)
        self._by_sid[template.sid] = compiled
        self._by_account.setdefault(template.account, []).append(compiled)

    def get(self, sid: str) -> Template | None:
        found = self._by_sid.get(sid)
        return None if found is None else found.template

    def list(self, account: str | None = None) -> list[Template]:
        if account is not None:
            return [c.template for c in self._by_account.get(account, [])]
        return [c.template for c in self._by_sid.values()]

    async def add(self, new: NewTemplate) -> Template:
        """Validate, persist (durable before it returns), then serve ``new``."""
        template = Template(
            sid=new.sid or "HX" + secrets.token_hex(16),
            account=new.account,
            namespace=new.namespace,
            name=new.name,
            language=new.language,
            body=new.body,
        )
        _compile(template)  # placeholders checked before anything is written
        if template.sid in self._by_sid:
            raise TemplateExistsError(f"template {template.sid} already exists")
        if self._store is not None:
            key = _KEY_PREFIX + template.sid.encode()
            raw = _encoder.encode(template)

            def fn(txn: WriteTxn) -> bool:
                return txn.put(b"meta", key, raw, overwrite=False)

            if not await self._store.write(fn):
                raise TemplateExistsError(f"template {template.sid} already exists")
        if template.sid in self._by_sid:  # added meanwhile by a concurrent request
            raise TemplateExistsError(f"template {template.sid} already exists")
        self._add(template)
        return template

    # -- create-time resolution -------------------------------------------------------

    def resolve(
        self, account: str, content_sid: str, variables: str | None, *, waba: str | None = None
    ) -> tuple[TemplateSend, str]:
        """``ContentSid`` + ``ContentVariables`` -> the template send and its rendered text.

        ``waba``: the sender's WhatsApp Business Account (whose synced templates it sends).
        Raises TwilioError 21655 (unknown sid, or another WABA's template), 63027 (the template
        is not APPROVED at Meta), 21656 (bad variables), 21658 (a value, or the rendered body,
        over its limit), 21620 (a bad header media link): what WhatsApp would refuse is refused here.
        """
        if not CONTENT_SID.match(content_sid):
            raise TwilioError(400, 21655, f"The ContentSid {content_sid} is invalid.")
        found = self._by_sid.get(content_sid)
        synced = self.catalog.get(content_sid) if self.catalog is not None and found is None else None
        if synced is not None:
            return self._resolve_synced(content_sid, synced, variables, waba)
        if found is None or found.template.account != account:
            raise TwilioError(400, 21655, f"The ContentSid {content_sid} was not found for this account.")
        values = _parse_variables(variables, found.count)
        rendered = render(found.template.body, values)
        if len(rendered) > MAX_TEMPLATE_BODY:
            raise TwilioError(
                400,
                21658,
                f"The ContentVariables make the template body {len(rendered)} characters long: "
                f"WhatsApp takes at most {MAX_TEMPLATE_BODY}.",
            )
        return _send(found.template, values), rendered

    @staticmethod
    def _resolve_synced(
        content_sid: str, synced: WaTemplate, variables: str | None, waba: str | None
    ) -> tuple[TemplateSend, str]:
        if waba != synced.waba:
            sender = f"the sender's WABA is {waba}" if waba else "the sender has no waba in its config"
            raise TwilioError(
                400,
                21655,
                f"The ContentSid {content_sid} was not found for this sender: it is a template of "
                f"WABA {synced.waba}, and {sender}.",
            )
        if not synced.sendable:
            raise TwilioError(400, NOT_APPROVED, not_sendable(synced))
        return template_values.resolve(synced, variables)

    def match(self, account: str, body: str) -> TemplateSend | None:
        """The template a free-form body is an instance of, with its values; None if none.

        Only a template send WhatsApp takes: the body (the rendered template) within
        ``MAX_TEMPLATE_BODY``, every value a sendable parameter.
        """
        if len(body) > MAX_TEMPLATE_BODY:
            return None
        best: tuple[int, TemplateSend] | None = None
        for compiled in self._by_account.get(account, ()):
            m = compiled.pattern.fullmatch(body)
            if m is None:
                continue
            values = [m.group(f"p{i}") for i in range(1, compiled.count + 1)]
            if any(not v.strip() or _UNSENDABLE_PARAM.search(v) for v in values):
                continue  # as a template WhatsApp would refuse it: a free-form message then
            if best is None or compiled.literal > best[0]:
                best = (compiled.literal, _send(compiled.template, values))
        return None if best is None else best[1]


def _send(template: Template, values: list[str]) -> TemplateSend:
    return TemplateSend(
        content_sid=template.sid,
        namespace=template.namespace,
        name=template.name,
        language=template.language,
        params=values,
    )


def _parse_variables(variables: str | None, count: int) -> list[str]:
    """``{"1": "Ada", "2": 42}`` -> ``["Ada", "42"]``, exactly the template's placeholders."""
    if variables is None or not variables.strip():
        if count:
            raise TwilioError(
                400, 21656, f"The ContentVariables parameter is required: the template has {count} variables."
            )
        return []
    try:
        decoded = variables_decoder.decode(variables)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TwilioError(
            400,
            21656,
            f"The ContentVariables parameter is invalid: expected a JSON object of strings ({exc}).",
        ) from exc
    values: list[str] = []
    for i in range(1, count + 1):
        raw = decoded.get(str(i))
        value = "" if raw is None else str(raw)
        if not value.strip():
            raise TwilioError(400, 21656, f"The ContentVariables parameter is missing a value for '{i}'.")
        if len(value) > MAX_VARIABLE:
            raise TwilioError(
                400, 21658, f"The ContentVariables value for '{i}' exceeds {MAX_VARIABLE} characters."
            )
        if _UNSENDABLE_PARAM.search(value):
            raise TwilioError(
                400,
                21656,
                f"The ContentVariables value for '{i}' cannot be sent: WhatsApp template values "
                "hold no newlines or tabs and at most 4 consecutive spaces.",
            )
        values.append(value)
    extra = sorted(set(decoded) - {str(i) for i in range(1, count + 1)})
    if extra:
        raise TwilioError(400, 21656, f"The ContentVariables parameter names unknown variables: {extra}.")
    return values
