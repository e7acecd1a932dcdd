"""A spec channel's webhooks: the signature checked and the payload read as the spec says.

``SpecWebhook`` is compiled once per channel kind. ``authentic`` checks a delivery's
signature (HMAC of the body or of the URL and sorted form parameters, or the secret in
the path; ``core.channelspec.signing``). ``decode`` reads a delivery into channel-neutral
events: the items at ``[webhook.status].items`` that pass its ``when`` become
``StatusEvent``s (the channel's status names mapped to Twilio's, its error codes to
Twilio's), the items of ``[webhook.inbound]`` become ``InboundEvent``s. As with Cloud
and On-Prem, an authentic delivery is never refused for one odd item: that item is an
``Unapplied`` note and the rest apply.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Final, final
from urllib.parse import parse_qsl

import msgspec

from dispatcher.channels.cloud_webhook import Decoded
from dispatcher.channels.spec_schema import typed_decoder
from dispatcher.channels.webhook_items import WebhookError
from dispatcher.core.channelspec import paths, signing, template
from dispatcher.core.channelspec.load import LoadedSpec, Registry
from dispatcher.core.channelspec.model import InboundHook, StatusHook, When
from dispatcher.core.events import InboundEvent, MediaItem, StatusEvent, Unapplied, WebhookEvents

_FAILED: Final = frozenset({"failed", "undelivered"})


def _getter(text: str | None) -> paths.Path | None:
    return paths.parse(text) if text is not None else None


@final
class _When:
    def __init__(self, when: When | None) -> None:
        self._path = _getter(when.path) if when is not None else None
        self._equals = frozenset(when.equals) if when is not None else frozenset()

    def __call__(self, item: object) -> bool:
        if self._path is None:
            return True
        value = self._path.get(item)
        if value is None:
            return False
        return not self._equals or _text(value) in self._equals


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None or isinstance(value, dict | list | msgspec.Struct) else str(value)


@final
class SpecWebhook:
    """How one channel kind's webhooks are checked and read (see the module's docstring)."""

    def __init__(self, loaded: LoadedSpec) -> None:
        hook = loaded.spec.webhook
        if hook is None:
            raise ValueError(f"the {loaded.kind} spec has no [webhook]")
        self.kind = loaded.kind
        self.form = hook.format == "form"
        self.signature = hook.signature
        self.ack_body = hook.ack_body.encode()
        self.ack_content_type = hook.ack_content_type
        self._phone = loaded.spec.address == "phone"
        self._status = _StatusReader(hook.status) if hook.status is not None else None
        self._inbound = _InboundReader(hook.inbound) if hook.inbound is not None else None
        readers = [r for r in (self._status, self._inbound) if r is not None]
        self._typed = (
            None
            if self.form
            else typed_decoder([(r.items_path, r.fields) for r in readers], loaded.kind.replace("-", "_"))
        )

    def key(self, settings: Mapping[str, str]) -> str:
        """The number's signing secret (its settings folded into ``signature.key``)."""
        if self.signature.key is None:
            return ""
        constants = {f"setting.{k}": v for k, v in settings.items()}
        return str(template.compile_text(self.signature.key, constants)({}))

    def authentic(self, key: str, header: str | None, body: bytes, url: str) -> bool:
        """``header`` (the spec's signature header) signs ``body`` posted to ``url``.

        A ``path`` scheme is checked by the route (the secret is the URL's last segment);
        ``none`` accepts anything.
        """
        sig = self.signature
        if sig.scheme != "hmac":
            return True
        if header is None:
            return False
        params = (
            parse_qsl(body.decode(errors="replace"), keep_blank_values=True) if sig.input != "body" else []
        )
        return signing.verify(sig, key, header, body, url, params)

    def decode(self, body: bytes) -> Decoded:
        """The events of an authentic delivery.

        Raises:
            WebhookError: the body is not a document of this channel at all (nothing applied).
        """
        doc = self._document(body)
        statuses: list[StatusEvent] = []
        inbound: list[InboundEvent] = []
        unapplied: list[Unapplied] = []
        ignored = 0
        if self._status is not None:
            for i, item in enumerate(self._status.items(doc)):
                read = self._status.read(item, f"{self._status.where}[{i}]", self._phone)
                if isinstance(read, StatusEvent):
                    implied = self._status.implies.get(read.status)
                    if implied is not None:
                        statuses.append(
                            StatusEvent(channel_id=read.channel_id, status=implied, recipient=read.recipient)
                        )
                    statuses.append(read)
                elif isinstance(read, Unapplied):
                    unapplied.append(read)
                else:
                    ignored += 1
        if self._inbound is not None:
            for i, item in enumerate(self._inbound.items(doc)):
                message = self._inbound.read(item, f"{self._inbound.where}[{i}]", self._phone)
                if isinstance(message, InboundEvent):
                    inbound.append(message)
                else:
                    unapplied.append(message)
        return Decoded(
            WebhookEvents(statuses=statuses, inbound=inbound, ignored=ignored, unapplied=unapplied),
            [f"{s.channel_id}:{s.status}" for s in statuses],
            [m.channel_id for m in inbound],
        )

    def _document(self, body: bytes) -> object:
        if self.form:
            try:
                pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
            except (UnicodeDecodeError, ValueError) as exc:
                raise WebhookError(f"not a form body: {exc}") from None
            out: dict[str, str] = {}
            for key, value in pairs:
                out.setdefault(key, value)
            return out
        if self._typed is not None:
            try:
                return self._typed.decode(body)  # only the places the spec reads
            except msgspec.DecodeError:
                pass  # not the shape the spec reads everywhere: read it generically, item by item
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise WebhookError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise WebhookError("not a JSON object")
        return doc


@final
class _StatusReader:
    def __init__(self, hook: StatusHook) -> None:
        self.where = hook.items or "$"
        self.items_path = paths.parse(hook.items)
        self._items = self.items_path
        self._when = _When(hook.when)
        self._id = paths.parse(hook.id)
        self._status = paths.parse(hook.status)
        self._map = hook.map
        self._recipient = _getter(hook.recipient)
        self._code = _getter(hook.error_code)
        self.fields = [paths.parse(p) for p in (hook.id, hook.status, hook.recipient, hook.error_code) if p]
        self.fields += [paths.parse(hook.when.path)] if hook.when is not None else []
        self._codes = hook.error_codes
        self._default = hook.default_twilio_code
        self._twilio_codes = hook.twilio_codes
        self.implies: dict[str, str] = dict(hook.implies)

    def items(self, doc: object) -> list[object]:
        return [item for item in self._items.every(doc) if self._when(item)]

    def read(self, item: object, where: str, phone: bool) -> StatusEvent | Unapplied | None:
        channel_id = _text(self._id.get(item))
        name = _text(self._status.get(item))
        if not channel_id or not name:
            return Unapplied("bad_status", where, "no id or status")
        status = self._map.get(name)
        if status is None:
            return Unapplied("unknown_status", where, name[:64])
        if status == "":
            return None
        recipient = _text(self._recipient.get(item)) if self._recipient is not None else ""
        code = message = None
        if status in _FAILED:
            raw = _text(self._code.get(item)) if self._code is not None else ""
            code = self._twilio(raw)
            message = f"{name} (code {raw})" if raw else name
        return StatusEvent(
            channel_id=channel_id[:256],
            status=status,
            error_code=code,
            error_message=message,
            recipient=recipient.lstrip("+") if phone else recipient,
        )

    def _twilio(self, raw: str) -> int:
        if raw in self._codes:
            return self._codes[raw]
        if self._twilio_codes and raw.isdigit() and 10_000 <= int(raw) <= 99_999:
            return int(raw)
        return self._default


@final
class _InboundReader:
    def __init__(self, hook: InboundHook) -> None:
        self.where = hook.items or "$"
        self.items_path = paths.parse(hook.items)
        self._items = self.items_path
        self._when = _When(hook.when)
        self._id = paths.parse(hook.id)
        self._sender = paths.parse(hook.sender)
        self._text = _getter(hook.text)
        self._kind = _getter(hook.kind)
        self._kinds = hook.kinds
        self._media_id = _getter(hook.media_id)
        self._media_type = _getter(hook.media_type)
        self._media_kinds = frozenset(hook.media_kinds)
        self._timestamp = _getter(hook.timestamp)
        self._unit = hook.timestamp_unit
        self._profile = _getter(hook.profile_name)
        self._reply_to = _getter(hook.reply_to)
        places = (hook.id, hook.sender, hook.text, hook.kind, hook.media_id, hook.media_type, hook.timestamp)
        self.fields = [paths.parse(p) for p in (*places, hook.profile_name, hook.reply_to) if p]
        self.fields += [paths.parse(hook.when.path)] if hook.when is not None else []

    def items(self, doc: object) -> list[object]:
        return [item for item in self._items.every(doc) if self._when(item)]

    def read(self, item: object, where: str, phone: bool) -> InboundEvent | Unapplied:
        channel_id = _text(self._id.get(item))
        sender = _text(self._sender.get(item))
        if not channel_id or not sender:
            return Unapplied("bad_message", where, "no id or sender")
        if phone:
            digits = sender.lstrip("+")
            if not digits.isdigit():
                return Unapplied("bad_message", where, f"sender is not a phone number: {sender[:32]!r}")
            sender = "+" + digits
        raw_kind = _text(self._kind.get(item)) if self._kind is not None else "text"
        kind = self._kinds.get(raw_kind, raw_kind) or "text"
        media: list[MediaItem] = []
        if kind in self._media_kinds and self._media_id is not None:
            media_id = _text(self._media_id.get(item))
            content_type = _text(self._media_type.get(item)) if self._media_type is not None else ""
            if media_id:
                media.append(MediaItem(media_id[:256], content_type or "application/octet-stream"))
        return InboundEvent(
            channel_id=channel_id[:256],
            sender=sender[:256],
            kind=kind[:32],
            timestamp=self._time(item),
            body=_text(self._text.get(item)) if self._text is not None else "",
            profile_name=_text(self._profile.get(item))[:256] if self._profile is not None else "",
            media=media,
            reply_to=(_text(self._reply_to.get(item)) or None) if self._reply_to is not None else None,
        )

    def _time(self, item: object) -> float:
        value = self._timestamp.get(item) if self._timestamp is not None else None
        if value is None:
            return 0.0
        try:
            if self._unit == "datetime":
                parsed = datetime.datetime.fromisoformat(str(value))
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=datetime.UTC)
                return parsed.timestamp()
            seconds = float(str(value))
        except ValueError:
            return 0.0
        return seconds / 1000.0 if self._unit == "ms" else seconds


@final
class SpecWebhooks:
    """The webhook readers of every spec kind that has a ``[webhook]``, compiled once; a live
    reload brings new kinds (``reload``)."""

    def __init__(self, registry: Registry) -> None:
        self._readers: dict[str, SpecWebhook] = {}
        self.reload(registry)

    def reload(self, registry: Registry) -> None:
        self._readers = {
            kind: SpecWebhook(loaded)
            for kind, loaded in registry.specs.items()
            if loaded.spec.webhook is not None
        }

    def get(self, kind: str) -> SpecWebhook | None:
        return self._readers.get(kind)
