"""The number directory: who each configured number is, looked up by E.164 or by its digits.

Intake asks it which account a ``From`` number belongs to; the webhook routes
ask it which number a ``/webhooks/.../{digits}`` path names and how that number
proves a webhook is WhatsApp's. What is in force is one immutable ``Snapshot``;
a live reload builds the next one and swaps it in (``Directory.reload``), so a
lookup never sees half a reload.

A number removed by a reload takes no new messages from then on, but it stays
in the directory for webhooks only: WhatsApp's statuses for what it already
sent still apply. It leaves that list when a later reload configures it again.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from typing import final

import attrs


@attrs.frozen
class CloudHook:
    """How a Cloud API number's webhooks are checked: Meta's app secret and our verify token."""

    phone_number_id: str
    app_secret: str = attrs.field(repr=False)
    verify_token: str = attrs.field(repr=False)


@attrs.frozen
class SpecHook:
    """A number of a spec channel kind: its kind (the webhook route names it), the secret its
    webhooks are checked with, and how its addresses read in the Twilio API."""

    kind: str
    key: str = attrs.field(repr=False)
    # The channel's address prefix ("line:"; "" for SMS) and, for channels whose customers
    # are not phone numbers, the pattern of their ids.
    prefix: str = ""
    recipient: re.Pattern[str] | None = None


@attrs.frozen
class NumberInfo:
    number: str
    account_sid: str
    webhook_secret: str
    status_callback: str | None = None
    inbound_url: str | None = None
    webhook_auth: str = "path"  # "path" | "header": where WhatsApp's webhooks carry the secret
    webhook_header: str = "X-Webhook-Secret"
    cloud: CloudHook | None = None  # a Cloud API number (its webhooks come to /webhooks/cloud/...)
    spec: SpecHook | None = None  # a number of a spec kind (its webhooks come to /webhooks/channel/...)
    # Free-form only inside the customer's 24 h window (63016). The config's default is
    # on (off for simulated numbers): see service.fleet.number_info.
    enforce_window: bool = False
    # A free-form message refused for the window falls back to this template (ContentSid), its
    # body as the variable ``window_variable`` (``dispatcher.core.fallbacks``).
    window_template: str | None = None
    window_variable: str = "1"
    waba: str | None = None  # its WhatsApp Business Account: the synced templates it may send

    @property
    def prefix(self) -> str:
        """How the number's addresses read in the Twilio API: ``whatsapp:``, or its spec's prefix."""
        return self.spec.prefix if self.spec is not None else "whatsapp:"


def _digits(number: str) -> str:
    return number.lstrip("+")


@attrs.frozen
class Snapshot:
    """The directory at one moment: the configured numbers, and the removed ones kept for webhooks."""

    configured: Mapping[str, NumberInfo]  # by E.164: the numbers that take new messages
    webhooks_only: Mapping[str, NumberInfo]  # by E.164: removed by a reload, their webhooks still apply
    by_digits: Mapping[str, NumberInfo]  # both of the above, by the digits a webhook path names
    # The Cloud numbers among them by the phone_number_id an app-level webhook's changes name.
    by_phone_number_id: Mapping[str, NumberInfo] = attrs.field(factory=dict)
    # Their distinct app secrets and verify tokens (one Meta app each, usually one in all).
    cloud_app_secrets: tuple[str, ...] = attrs.field(default=(), repr=False)
    cloud_verify_tokens: tuple[str, ...] = attrs.field(default=(), repr=False)

    @classmethod
    def of(
        cls, numbers: Iterable[NumberInfo], webhooks_only: Mapping[str, NumberInfo] | None = None
    ) -> Snapshot:
        configured = {info.number: info for info in numbers}
        kept = {n: info for n, info in (webhooks_only or {}).items() if n not in configured}
        hooks = {**kept, **configured}
        clouds = [info.cloud for info in hooks.values() if info.cloud is not None]
        return cls(
            configured,
            kept,
            {_digits(n): info for n, info in hooks.items()},
            {info.cloud.phone_number_id: info for info in hooks.values() if info.cloud is not None},
            tuple(dict.fromkeys(c.app_secret for c in clouds if c.app_secret)),
            tuple(dict.fromkeys(c.verify_token for c in clouds if c.verify_token)),
        )

    def reloaded(self, numbers: Iterable[NumberInfo]) -> Snapshot:
        """The next snapshot: ``numbers`` configured; every number configured now or kept before and
        absent from ``numbers`` kept for webhooks only (as it was last configured)."""
        return Snapshot.of(numbers, {**self.webhooks_only, **self.configured})


@final
class Directory:
    """The snapshot in force. Its lookups read the current snapshot; ``reload`` replaces it."""

    def __init__(self, numbers: Iterable[NumberInfo]) -> None:
        self._now = Snapshot.of(numbers)

    @property
    def snapshot(self) -> Snapshot:
        return self._now

    def reload(self, numbers: Iterable[NumberInfo]) -> None:
        """A live reload: ``numbers`` are the configured ones from now on (see the module's docstring)."""
        self._now = self._now.reloaded(numbers)

    def get(self, number: str) -> NumberInfo | None:
        """A configured number (one that takes new messages) by E.164."""
        return self._now.configured.get(number)

    def by_digits(self, digits: str) -> NumberInfo | None:
        """The number a webhook path names (configured or kept for webhooks only), not yet authenticated."""
        return self._now.by_digits.get(digits)

    def webhook_number(self, digits: str, secret: str, *, via: str = "path") -> NumberInfo | None:
        """The number a webhook names, if it uses that way of proving its source and the secret matches."""
        info = self._now.by_digits.get(digits)
        if info is None or info.webhook_auth != via:
            return None
        # An empty secret never matches (secretpolicy.matches, inlined: this runs for every webhook).
        if (
            not secret
            or not info.webhook_secret
            or not hmac.compare_digest(secret.encode(), info.webhook_secret.encode())
        ):
            return None
        return info

    def cloud_number(self, digits: str) -> NumberInfo | None:
        """The Cloud API number a ``/webhooks/cloud/{digits}`` route names (its secrets are checked there)."""
        info = self._now.by_digits.get(digits)
        return info if info is not None and info.cloud is not None else None

    def by_phone_number_id(self, phone_number_id: str) -> NumberInfo | None:
        """The Cloud API number an app-level webhook's change names (configured or kept for webhooks)."""
        return self._now.by_phone_number_id.get(phone_number_id)

    def cloud_numbers(self) -> list[NumberInfo]:
        """Every Cloud API number webhooks may name (configured or kept for webhooks), by E.164."""
        return sorted(self._now.by_phone_number_id.values(), key=lambda info: info.number)

    def cloud_app_secrets(self) -> tuple[str, ...]:
        """The app secrets an app-level webhook may be signed with (its numbers' apps')."""
        return self._now.cloud_app_secrets

    def cloud_verify_tokens(self) -> tuple[str, ...]:
        """The verify tokens the app-level webhook's handshake takes (any Cloud number's)."""
        return self._now.cloud_verify_tokens
