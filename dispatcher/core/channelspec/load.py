"""Finding, decoding and checking channel specs: the shipped ones and the user's directory.

``load_file`` decodes one TOML file into a ``model.Spec`` (unknown keys refused) and then
checks what the types cannot say: every path parses, every placeholder is known where it
is used and names a declared setting, each auth type has what it needs. Every error
names the file and the key (``line.toml: send.text.body.messages[0].text: unknown
placeholder {bdy}``). ``load_registry`` gathers the shipped specs and a user directory
into a ``Registry`` by kind; a kind defined twice is an error, not a silent override.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, final

import attrs
import msgspec

from dispatcher.core.channelspec import paths, template
from dispatcher.core.channelspec.model import Auth, Send, SendKind, Spec
from dispatcher.core.decode_errors import key_first

SHIPPED_DIR: Final = Path(__file__).with_name("shipped")
RESERVED_KINDS: Final = frozenset({"onprem", "cloud"})  # the hand-written channels
MEDIA_KINDS: Final = frozenset({"image", "video", "audio", "document", "sticker"})
TWILIO_STATUSES: Final = frozenset({"sent", "delivered", "read", "failed", "undelivered", ""})

# What each place of a spec may use (``setting.NAME`` is allowed everywhere a message field is,
# and checked against [settings]).
MESSAGE_FIELDS: Final = frozenset(
    {"to", "to_digits", "from", "from_digits", "sid", "sid_uuid", "status_url", "account_sid"}
)
KIND_FIELDS: Final = {
    "text": MESSAGE_FIELDS | {"body"},
    "media": MESSAGE_FIELDS | {"media_url", "media_kind", "media_type", "caption", "filename"},
    "template": MESSAGE_FIELDS
    | {
        "template_name",
        "template_language",
        "template_namespace",
        "template_values",
        "template_values_json",
        "template_text_parameters",
        "content_sid",
    },
}
SETTINGS_ONLY: Final = frozenset[str]()
HMAC_FIELDS: Final = frozenset({"method", "path", "body", "timestamp"})
SIM_FIELDS: Final = frozenset({"id", "to", "to_digits", "from", "from_digits", "sid", "request_id"})


_Names = Callable[[object, frozenset[str], str], None]


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the key."""


@final
@attrs.frozen
class LoadedSpec:
    """A checked spec and where it came from."""

    spec: Spec
    file: str
    recipient: re.Pattern[str] | None  # the recipient_pattern of an ``address = "id"`` kind

    @property
    def kind(self) -> str:
        return self.spec.kind


@final
@attrs.frozen
class Registry:
    """The channel kinds a configuration can name, by kind."""

    specs: Mapping[str, LoadedSpec]

    def get(self, kind: str) -> LoadedSpec | None:
        return self.specs.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self.specs)


def load_file(path: str | os.PathLike[str]) -> LoadedSpec:
    """One spec file, decoded and checked.

    Raises:
        SpecError: naming the file and the key.
    """
    name = os.fspath(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(f"{name}: cannot read: {exc.strerror}") from exc
    return loads(text, name)


def loads(text: bytes | str, name: str) -> LoadedSpec:
    """A spec from TOML ``text``; ``name`` is what errors call the file."""
    try:
        spec = msgspec.toml.decode(text, type=Spec)
    except msgspec.ValidationError as exc:
        raise SpecError(f"{name}: {key_first(str(exc))}") from exc
    except msgspec.DecodeError as exc:
        raise SpecError(f"{name}: not valid TOML: {exc}") from exc
    try:
        recipient = _check(spec)
    except (template.TemplateError, paths.PathError, _Bad) as exc:
        raise SpecError(f"{name}: {exc}") from exc
    return LoadedSpec(spec, name, recipient)


def load_registry(user_dir: str | None = None, *, shipped: bool = True) -> Registry:
    """The shipped specs (``shipped/*.toml``) and the ``*.toml`` files of ``user_dir``.

    Raises:
        SpecError: a bad file, a kind defined twice, or a reserved kind.
    """
    files: list[Path] = sorted(SHIPPED_DIR.glob("*.toml")) if shipped else []
    if user_dir is not None:
        directory = Path(user_dir)
        if not directory.is_dir():
            raise SpecError(f"{user_dir}: not a directory of channel specs")
        files += sorted(directory.glob("*.toml"))
    return registry_of(load_file(f) for f in files)


def registry_of(specs: Iterable[LoadedSpec]) -> Registry:
    out: dict[str, LoadedSpec] = {}
    for loaded in specs:
        if loaded.kind in RESERVED_KINDS:
            raise SpecError(f"{loaded.file}: kind: {loaded.kind!r} is a built-in channel")
        if (other := out.get(loaded.kind)) is not None:
            raise SpecError(f"{loaded.file}: kind: {loaded.kind!r} is already defined by {other.file}")
        out[loaded.kind] = loaded
    return Registry(out)


class _Bad(ValueError):
    pass


def _check(spec: Spec) -> re.Pattern[str] | None:
    settings = set(spec.settings)

    def names(tree: object, allowed: frozenset[str], where: str) -> None:
        for used, key in template.check(tree, allowed, where):
            if used.startswith("setting.") and used[len("setting.") :] not in settings:
                known = ", ".join(sorted(settings)) or "none"
                raise _Bad(f"{key}: {{{used}}} names no [settings] entry (declared: {known})")

    for key, setting in spec.settings.items():
        if setting.default is not None and setting.required:
            raise _Bad(f"settings.{key}.default: a setting with a default is not required (required = false)")
    recipient = None
    if spec.address == "id":
        if spec.recipient_pattern is None:
            raise _Bad('recipient_pattern: required with address = "id"')
        try:
            recipient = re.compile(spec.recipient_pattern)
        except re.error as exc:
            raise _Bad(f"recipient_pattern: not a regular expression: {exc}") from None
        if not spec.prefix:
            raise _Bad('prefix: an address = "id" channel needs a prefix (e.g. "line:")')
    elif spec.recipient_pattern is not None:
        raise _Bad('recipient_pattern: only with address = "id"')
    if spec.base_url is not None and not re.match(r"^https?://[^/\s]+$", spec.base_url):
        raise _Bad(f"base_url: expected scheme://host[:port] with no path, got {spec.base_url!r}")
    if spec.media_path is not None:
        names(spec.media_path, frozenset({"media_id"}), "media_path")
        if not spec.media_path.startswith("/") or "{media_id}" not in spec.media_path:
            raise _Bad("media_path: a path starting with '/' holding {media_id}")
    if spec.limits.burst < 1:
        raise _Bad("limits.burst: at least 1")
    _check_auth(spec.auth, names)
    _check_send(spec.send, names)
    answer = spec.answer
    for key in ("id_path", "ok_path", "error_code_path", "error_message_path"):
        value = getattr(answer, key)
        if value is not None:
            _path(value, f"answer.{key}")
    if answer.ok and answer.ok_path is None:
        raise _Bad("answer.ok: needs answer.ok_path")
    for i, rule in enumerate(spec.errors):
        if rule.code and answer.error_code_path is None:
            raise _Bad(f"errors[{i}].code: needs answer.error_code_path (where the code is read)")
        if rule.class_ == "permanent" and rule.twilio_code is None:
            raise _Bad(f'errors[{i}].twilio_code: required for class = "permanent"')
    if spec.webhook is not None:
        _check_webhook(spec, names)
    if spec.simulator is not None:
        sim = spec.simulator
        for key in (
            "accepted",
            "invalid_request",
            "invalid_recipient",
            "rate_limited",
            "unauthorized",
            "duplicate",
        ):
            answer_tpl = getattr(sim, key)
            if answer_tpl is not None:
                names(answer_tpl.body, SIM_FIELDS, f"simulator.{key}.body")
                names(answer_tpl.headers, SIM_FIELDS, f"simulator.{key}.headers")
        for key in ("status_document", "inbound_document", "envelope"):
            names(getattr(sim, key), SIM_FIELDS, f"simulator.{key}")
        status = spec.webhook.status if spec.webhook is not None else None
        if (sim.walk or sim.failed_status) and status is None:
            raise _Bad("simulator.walk: the spec has no [webhook.status] to report statuses")
        for i, name in enumerate(sim.walk):
            if status is not None and name not in status.map:
                raise _Bad(f"simulator.walk[{i}]: {name!r} is not in webhook.status.map")
        if sim.failed_status and status is not None and sim.failed_status not in status.map:
            raise _Bad(f"simulator.failed_status: {sim.failed_status!r} is not in webhook.status.map")
    return recipient


def _check_auth(auth: Auth, names: _Names) -> None:
    needs = {
        "basic": ("username", "password"),
        "header": ("name", "value"),
        "query": ("name", "value"),
        "hmac": ("header", "key"),
        "bearer": (),
        "none": (),
    }[auth.type]
    for key in needs:
        if getattr(auth, key) is None:
            raise _Bad(f"auth.{key}: required for type = {auth.type!r}")
    if auth.type == "bearer" and (auth.token is None) == (auth.login is None):
        raise _Bad('auth: type = "bearer" takes exactly one of token, login')
    if auth.login is not None and auth.type != "bearer":
        raise _Bad(f'auth.login: only for type = "bearer", not {auth.type!r}')
    for key in ("username", "password", "token", "key"):
        value = getattr(auth, key)
        if value is not None:
            names(value, SETTINGS_ONLY, f"auth.{key}")
    if auth.value is not None:
        names(auth.value, SETTINGS_ONLY, "auth.value")
    names(auth.message, HMAC_FIELDS, "auth.message")
    if auth.type == "query" and auth.name is not None and not re.match(r"^[A-Za-z0-9_.-]{1,64}$", auth.name):
        raise _Bad(f"auth.name: not a query parameter name: {auth.name!r}")
    if auth.login is not None:
        login = auth.login
        names(login.path, SETTINGS_ONLY, "auth.login.path")
        names(login.body, SETTINGS_ONLY, "auth.login.body")
        names(login.headers, SETTINGS_ONLY, "auth.login.headers")
        _path(login.token_path, "auth.login.token_path")
        if login.expires_in_path is not None:
            _path(login.expires_in_path, "auth.login.expires_in_path")


def _check_send(send: Send, names: _Names) -> None:
    if not send.path.startswith("/"):
        raise _Bad(f"send.path: must start with '/', got {send.path!r}")
    names(send.path, MESSAGE_FIELDS, "send.path")
    names(send.headers, MESSAGE_FIELDS, "send.headers")
    for label in ("text", "media", "template"):
        kind: SendKind | None = getattr(send, label)
        if kind is None:
            continue
        allowed = KIND_FIELDS[label]
        where = f"send.{label}"
        names(kind.body, allowed, f"{where}.body")
        names(kind.headers, allowed, f"{where}.headers")
        if kind.path is not None:
            if not kind.path.startswith("/"):
                raise _Bad(f"{where}.path: must start with '/', got {kind.path!r}")
            names(kind.path, allowed, f"{where}.path")
        if send.format == "form":
            for key, value in kind.body.items():
                if not isinstance(value, str | int | float | bool):
                    raise _Bad(f"{where}.body.{key}: a form body takes strings, not tables or arrays")
        if kind.kinds is not None:
            if label != "media":
                raise _Bad(f"{where}.kinds: only for send.media")
            for ours in kind.kinds:
                if ours not in MEDIA_KINDS:
                    raise _Bad(f"{where}.kinds.{ours}: not a media kind ({', '.join(sorted(MEDIA_KINDS))})")
    for header in (
        *send.headers,
        *(k for s in (send.text, send.media, send.template) if s for k in s.headers),
    ):
        if not re.match(r"^[A-Za-z0-9-]{1,64}$", header):
            raise _Bad(f"send.headers: not a header name: {header!r}")


def _check_webhook(spec: Spec, names: _Names) -> None:
    hook = spec.webhook
    assert hook is not None
    sig = hook.signature
    if sig.scheme != "none" and sig.key is None:
        raise _Bad(f"webhook.signature.key: required for scheme = {sig.scheme!r}")
    if sig.scheme == "hmac" and sig.header is None:
        raise _Bad('webhook.signature.header: required for scheme = "hmac"')
    if sig.input == "url+params" and hook.format != "form":
        raise _Bad('webhook.signature.input: "url+params" signs form posts (webhook.format = "form")')
    if sig.key is not None:
        names(sig.key, SETTINGS_ONLY, "webhook.signature.key")
    if hook.status is None and hook.inbound is None:
        raise _Bad("webhook: give [webhook.status], [webhook.inbound] or both")
    if hook.status is not None:
        status = hook.status
        for key in ("items", "id", "status", "recipient", "error_code"):
            value = getattr(status, key)
            if value is not None:
                _path(value, f"webhook.status.{key}")
        if status.when is not None:
            _path(status.when.path, "webhook.status.when.path")
        for name in status.implies:
            if name not in status.map.values():
                raise _Bad(f"webhook.status.implies.{name}: not a Twilio status of webhook.status.map")
        for name, ours in status.map.items():
            if ours not in TWILIO_STATUSES:
                raise _Bad(
                    f"webhook.status.map.{name}: {ours!r} is not a Twilio status (sent, delivered, read, "
                    'failed, undelivered, or "" to ignore it)'
                )
    if hook.inbound is not None:
        inbound = hook.inbound
        for key in (
            "items",
            "id",
            "sender",
            "text",
            "kind",
            "media_id",
            "media_type",
            "timestamp",
            "profile_name",
            "reply_to",
        ):
            value = getattr(inbound, key)
            if value is not None:
                _path(value, f"webhook.inbound.{key}")
        if inbound.when is not None:
            _path(inbound.when.path, "webhook.inbound.when.path")
        if inbound.kinds and inbound.kind is None:
            raise _Bad("webhook.inbound.kinds: needs webhook.inbound.kind (where the type is read)")


def _path(text: str, where: str) -> paths.Path:
    try:
        parsed = paths.parse(text)
    except paths.PathError as exc:
        raise _Bad(f"{where}: {exc}") from None
    if parsed.wild and not where.endswith(".items"):
        raise _Bad(f"{where}: [*] is only for the items of a webhook")
    return parsed
