"""A channel built from a spec: its send requests and the reading of their answers.

``SpecChannel.compile`` runs once per number: the spec's templates become closures with
the number's settings folded in, its paths are parsed, its error rules ordered. A send
then fills only the message's own slots (to, body, sid...) and encodes one JSON or form
body; nothing is parsed per message. Pure translation, no I/O (the actor sends).

An answer is classified in this order: a 2xx whose ``ok_path`` holds an ``ok`` value (or
any 2xx without ``ok_path``) is ``Sent`` with the id at ``id_path`` (no readable id: an
ambiguous ``Retry``, the message may have gone); otherwise the first ``[[errors]]`` rule
that matches decides; otherwise the defaults (courier's): 429 rate-limited, 5xx
transient, 401/403 credentials, another 4xx permanent, an unknown code in a 2xx retried
a few times before it fails.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping
from typing import Final, final
from urllib.parse import quote

import attrs
import msgspec

from actors.channel import Unsendable
from actors.outcome import (
    GENERIC_FAILURE,
    UNKNOWN_CODE_ATTEMPTS,
    Failed,
    Halt,
    Outcome,
    Reauth,
    Retry,
    Sent,
    retry_after,
)
from actors.transport import Headers, Response
from dispatcher.channels.spec_schema import typed_decoder
from dispatcher.core import parts, urlpath
from dispatcher.core.channelspec import paths, template
from dispatcher.core.channelspec.load import LoadedSpec
from dispatcher.core.channelspec.model import ErrorRule, SendKind, Spec
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord

_json_encoder: Final = msgspec.json.Encoder()
_JSON: Final = (b"content-type", b"application/json")
_FORM: Final = (b"content-type", b"application/x-www-form-urlencoded")
# Without a Retry-After, a rate-limited channel pauses the whole number this long.
RATE_LIMIT_PAUSE: Final = 1.0
# The channel's media names for ours, when a spec names none.
DEFAULT_MEDIA_KINDS: Final = {"image": "image", "video": "video", "audio": "audio", "document": "document"}
NOT_SUPPORTED: Final = 63021  # Twilio: the channel cannot carry this content


WEBHOOK_ROUTE: Final = "/webhooks/channel"


def webhook_key(loaded: LoadedSpec, settings: Mapping[str, str]) -> str:
    """The secret a number's webhooks are checked with (its spec's ``signature.key``, filled in)."""
    hook = loaded.spec.webhook
    if hook is None or hook.signature.key is None:
        return ""
    constants = {f"setting.{k}": v for k, v in settings.items()}
    return str(template.compile_text(hook.signature.key, constants)({}))


def webhook_path(loaded: LoadedSpec, settings: Mapping[str, str], number: str) -> str:
    """Where a number of a spec kind takes its webhooks: ``/webhooks/channel/{kind}/{digits}``,
    and the secret as the last segment when the spec signs by path."""
    path = f"{WEBHOOK_ROUTE}/{loaded.kind}/{number.lstrip('+')}"
    hook = loaded.spec.webhook
    if hook is not None and hook.signature.scheme == "path":
        path += "/" + quote(webhook_key(loaded, settings), safe="")
    return path


def sid_uuid(sid: str) -> str:
    """Our sid's 32 hex digits as a UUID (LINE's ``X-Line-Retry-Key`` must be one)."""
    h = sid[-32:].lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _template_values(params: list[str]) -> str:
    return _json_encoder.encode({str(i): v for i, v in enumerate(params, 1)}).decode()


# What each placeholder of a message is, from the record and the part being sent.
_Field = Callable[[MessageRecord, parts.Part | None], object]
_FIELDS: Final[dict[str, _Field]] = {
    "to": lambda r, p: r.to_number,
    "to_digits": lambda r, p: r.to_number.lstrip("+"),
    "from": lambda r, p: r.from_number,
    "from_digits": lambda r, p: r.from_number.lstrip("+"),
    "sid": lambda r, p: r.sid,
    "sid_uuid": lambda r, p: sid_uuid(r.sid),
    "account_sid": lambda r, p: r.account_sid,
    "body": lambda r, p: p.body if isinstance(p, parts.TextPart) else r.body,
    "media_url": lambda r, p: p.item.link if isinstance(p, parts.MediaPart) else None,
    "media_type": lambda r, p: p.item.content_type if isinstance(p, parts.MediaPart) else None,
    "caption": lambda r, p: p.caption if isinstance(p, parts.MediaPart) else None,
    "filename": lambda r, p: p.item.filename if isinstance(p, parts.MediaPart) else None,
    "template_name": lambda r, p: p.template.name if isinstance(p, parts.TemplatePart) else None,
    "template_language": lambda r, p: p.template.language if isinstance(p, parts.TemplatePart) else None,
    "template_namespace": lambda r, p: p.template.namespace if isinstance(p, parts.TemplatePart) else None,
    "template_values": lambda r, p: list(p.template.params) if isinstance(p, parts.TemplatePart) else None,
    "template_values_json": lambda r, p: (
        _template_values(p.template.params) if isinstance(p, parts.TemplatePart) else None
    ),
    "content_sid": lambda r, p: p.template.content_sid if isinstance(p, parts.TemplatePart) else None,
    "template_text_parameters": lambda r, p: (
        [{"type": "text", "text": v} for v in p.template.params]
        if isinstance(p, parts.TemplatePart)
        else None
    ),
}


@final
@attrs.frozen
class _CompiledKind:
    """One message kind's request: its fields, path, headers and body as closures."""

    method: bytes
    fields: tuple[tuple[str, _Field], ...]
    path: template.Render
    headers: tuple[tuple[bytes, template.Render], ...]
    body: Callable[[Mapping[str, object]], bytes]
    media_kinds: Mapping[str, str] | None

    def values(self, record: MessageRecord, part: parts.Part | None) -> dict[str, object]:
        return {name: field(record, part) for name, field in self.fields}


def _json_body(render: template.Render) -> Callable[[Mapping[str, object]], bytes]:
    encode = _json_encoder.encode
    return lambda values: encode(render(values))


@final
class SpecChannel:
    """A number of a spec-described channel kind (see the module's docstring)."""

    media_hosts: tuple[str, ...] = ()

    def __init__(
        self,
        loaded: LoadedSpec,
        *,
        settings: Mapping[str, str],
        number: str,
        status_url: str | None,
        wall: WallClock,
        login: bool,
    ) -> None:
        """``settings``: the number's values of the spec's settings (secrets resolved);
        ``status_url``: where this number's webhooks come in (the ``{status_url}`` slot);
        ``login``: the credentials renew themselves (a refusal asks them to, not the operator)."""
        spec = loaded.spec
        self.spec: Spec = spec
        self.name = spec.kind
        self._wall = wall
        self._login = login
        self.constants: dict[str, object] = {f"setting.{k}": v for k, v in settings.items()}
        self.constants.update(
            {
                "from": number,
                "from_digits": number.lstrip("+"),
                "status_url": status_url or "",
            }
        )
        send = spec.send
        self._content_type = _FORM if send.format == "form" else _JSON
        self._kinds = {
            label: self._compile_kind(kind, label)
            for label in ("text", "media", "template")
            if (kind := getattr(send, label)) is not None
        }
        auth = spec.auth
        self._auth_header: bytes | None = {
            "basic": b"authorization",
            "bearer": b"authorization",
            "header": (auth.name or "").lower().encode(),
        }.get(auth.type)
        self._query = b""
        if auth.type == "query":
            assert auth.name is not None and auth.value is not None
            value = template.compile_text(auth.value, self.constants)({})
            self._query = f"{quote(auth.name)}={quote(str(value), safe='')}".encode()
        self._hmac_key = b""
        if auth.type == "hmac":
            assert auth.key is not None
            self._hmac_key = str(template.compile_text(auth.key, self.constants)({})).encode()
            self._hmac_message = template.compile_text(auth.message, {})
            self._hmac_header = (auth.header or "").lower().encode()
            self._hmac_ts = (auth.timestamp_header or "").lower().encode()
        answer = spec.answer
        read = [
            p
            for p in (answer.id_path, answer.ok_path, answer.error_code_path, answer.error_message_path)
            if p
        ]
        # The answer decoded into just the places read (the rest skipped, not built).
        self._answer = typed_decoder(
            [(paths.parse(""), [paths.parse(p) for p in read])], f"{spec.kind}_answer"
        )
        self._id = paths.parse(answer.id_path)
        self._ok = paths.parse(answer.ok_path) if answer.ok_path else None
        self._ok_values = frozenset(answer.ok)
        self._code = paths.parse(answer.error_code_path) if answer.error_code_path else None
        self._message = paths.parse(answer.error_message_path) if answer.error_message_path else None
        self._duplicate_header = (
            answer.duplicate_id_header.lower().encode() if answer.duplicate_id_header else None
        )
        self._rules: tuple[ErrorRule, ...] = tuple(spec.errors)
        self._media_path = spec.media_path

    def _compile_kind(self, kind: SendKind, label: str) -> _CompiledKind:
        send = self.spec.send
        path = kind.path or send.path
        headers = {**send.headers, **kind.headers}
        used = {
            name
            for tree in (kind.body, path, headers)
            for name, _ in template.check(tree, frozenset(_FIELDS) | {"media_kind", *self.constants}, "send")
        }
        used -= set(self.constants)
        used = {n for n in used if not n.startswith("setting.")}
        used.discard("media_kind")  # set from the part's kind and the spec's names (_values)
        fields = tuple((n, _FIELDS[n]) for n in sorted(used) if n in _FIELDS)
        media_kinds = kind.kinds if kind.kinds is not None else DEFAULT_MEDIA_KINDS
        return _CompiledKind(
            method=(kind.method or send.method).encode(),
            fields=fields,
            path=template.compile_text(path, self.constants),
            headers=tuple(
                (name.lower().encode(), template.compile_text(value, self.constants))
                for name, value in headers.items()
            ),
            body=(
                template.compile_form(kind.body, self.constants)
                if send.format == "form"
                else _json_body(template.compile_tree(kind.body, self.constants))
            ),
            media_kinds=media_kinds if label == "media" else None,
        )

    # -- sending --------------------------------------------------------------------

    def _kind_of(self, record: MessageRecord, part: int) -> tuple[_CompiledKind, parts.Part | None]:
        body = parts.sole_text(record, part)
        if body is not None:
            return self._kinds["text"], None
        planned = parts.plan(record)[part]
        label = (
            "text"
            if isinstance(planned, parts.TextPart)
            else "media"
            if isinstance(planned, parts.MediaPart)
            else "template"
        )
        kind = self._kinds.get(label)
        if kind is None:
            raise Unsendable(NOT_SUPPORTED, f"the {self.name} channel takes no {label} messages")
        return kind, planned

    def _values(
        self, kind: _CompiledKind, record: MessageRecord, part: parts.Part | None
    ) -> dict[str, object]:
        values = kind.values(record, part)
        if kind.media_kinds is not None:
            assert isinstance(part, parts.MediaPart)
            wire = kind.media_kinds.get(part.item.kind)
            if wire is None:
                raise Unsendable(NOT_SUPPORTED, f"the {self.name} channel takes no {part.item.kind} media")
            values["media_kind"] = wire
        return values

    def encode(self, record: MessageRecord, part: int = 0) -> tuple[bytes, bytes, bytes, Headers]:
        """``(method, target, body, headers)`` of the send of part ``part`` of ``record``; the
        headers are the spec's, without auth (``authorize`` adds it to each attempt).

        Raises:
            Unsendable: the channel has no request for this kind of message.
        """
        kind, planned = self._kind_of(record, part)
        values = self._values(kind, record, planned)
        target = str(kind.path(values)).encode()
        if self._query:
            target += (b"&" if b"?" in target else b"?") + self._query
        head: Headers = [self._content_type]
        for name, render in kind.headers:
            value = render(values)
            if value is not template.MISSING and value != "":
                head.append((name, str(value).encode()))
        return kind.method, target, kind.body(values), head

    def authorize(self, head: Headers, method: bytes, target: bytes, body: bytes, auth: bytes) -> Headers:
        """The headers of one attempt: ``head`` and the credentials (an HMAC signed now)."""
        if self._auth_header is not None:
            return [*head, (self._auth_header, auth)]
        if not self._hmac_key:
            return head
        now = str(int(self._wall.now()))
        message = self._hmac_message(
            {"method": method.decode(), "path": target.decode(), "body": body.decode(), "timestamp": now}
        )
        auth_spec = self.spec.auth
        digest = hmac.new(self._hmac_key, str(message).encode(), auth_spec.algorithm).digest()
        encoded = digest.hex() if auth_spec.encoding == "hex" else base64.b64encode(digest).decode()
        out = [*head, (self._hmac_header, (auth_spec.prefix + encoded).encode())]
        if self._hmac_ts:
            out.append((self._hmac_ts, now.encode()))
        return out

    # -- answers --------------------------------------------------------------------

    def classify(self, resp: Response) -> Outcome:
        doc = self._read(resp.body)
        status = resp.status
        if 200 <= status < 300 and (self._ok is None or _text(self._ok.get(doc)) in self._ok_values):
            channel_id = _text(self._id.get(doc))
            if channel_id:
                return Sent(channel_id)
            return Retry("success answer without a message id", ambiguous=True)
        code = _text(self._code.get(doc)) if self._code is not None else None
        message = _text(self._message.get(doc)) if self._message is not None else None
        described = self._describe(status, code, message)
        for rule in self._rules:
            if rule.status and status not in rule.status:
                continue
            if rule.code and code not in rule.code:
                continue
            if rule.contains is not None and rule.contains.encode() not in resp.body:
                continue
            return self._outcome(rule.class_, rule.twilio_code, described, resp)
        if status == 429:
            return self._outcome("rate_limited", None, described, resp)
        if status >= 500:
            return self._outcome("transient", None, described, resp)
        if status in (401, 403):
            return self._outcome("credentials", None, described, resp)
        if 200 <= status < 300:
            # A 2xx refusal with a code no rule names: perhaps transient, retried a few times.
            return Retry(described, cap=UNKNOWN_CODE_ATTEMPTS, gives_up_with=(GENERIC_FAILURE, described))
        return Failed(GENERIC_FAILURE, described)

    def _read(self, body: bytes) -> object:
        """The answer's places the spec reads (None: not JSON at all)."""
        if not body:
            return None
        try:
            return self._answer.decode(body)
        except msgspec.DecodeError:
            pass
        try:
            return msgspec.json.decode(body)  # JSON of another shape: read what can be read
        except msgspec.DecodeError:
            return None

    def _outcome(self, cls: str, twilio_code: int | None, described: str, resp: Response) -> Outcome:
        if cls == "transient":
            return Retry(described, after=retry_after(resp))
        if cls == "rate_limited":
            after = retry_after(resp)
            return Retry(described, after=RATE_LIMIT_PAUSE if after is None else after, rate_limited=True)
        if cls == "credentials":
            return Reauth() if self._login else Halt(f"credentials refused: {described}")
        if cls == "duplicate":
            header = resp.header(self._duplicate_header) if self._duplicate_header else None
            channel_id = _text(self._id.get(self._read(resp.body))) or (header.decode() if header else None)
            if channel_id:
                return Sent(channel_id)
            return Retry(f"duplicate without an id: {described}", ambiguous=True)
        return Failed(twilio_code or GENERIC_FAILURE, described)

    def _describe(self, status: int, code: str | None, message: str | None) -> str:
        text = message or f"HTTP {status} from the {self.name} channel"
        return f"{text} (code {code})" if code else text

    def twilio_code(self, code: int) -> int:
        for rule in self._rules:
            if str(code) in rule.code and rule.twilio_code is not None:
                return rule.twilio_code
        return GENERIC_FAILURE

    # -- inbound media ----------------------------------------------------------------

    def media_target(self, media_id: str) -> bytes:
        """The spec's ``media_path`` for ``media_id``: it answers with the file itself.

        Raises:
            IdError: ``media_id`` is not a media id, or the channel serves no media.
        """
        if self._media_path is None:
            raise urlpath.IdError(f"the {self.name} channel serves no inbound media")
        quoted = urlpath.path(urlpath.check("media_id", media_id))[1:].decode()
        return self._media_path.replace("{media_id}", quoted).encode()

    def media_location(self, answer: Response) -> str:
        raise ValueError(f"the {self.name} channel answers media with the file itself")


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, dict | list | msgspec.Struct):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
