"""What the On-Prem and Cloud webhook decoders share: the batch of events and the items of a payload.

Both channels carry the same four lists in a payload (On-Prem at the top,
Cloud in each change's ``value``): ``statuses``, ``contacts``, ``messages``
and ``errors``. Each decoder first reads a payload in one typed pass (the
common shape, hundreds of statuses at once: ``ItemReader.apply``); only when
that pass fails is every item decoded alone (``ItemReader.apply_each``), so
that one item in an unexpected form is noted as ``Unapplied`` and the others
still apply. A channel brings its own status and error types and what a
status becomes (``ItemReader``); the rest is here, written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Final, Generic, TypeVar, final

import attrs
import msgspec

from dispatcher.channels import inbound_message
from dispatcher.channels.inbound_message import Profiles
from dispatcher.core import jsondecode
from dispatcher.core.events import ChannelError, InboundEvent, StatusEvent, Unapplied, WebhookEvents

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=65_536)]

# WhatsApp status -> Twilio status, the same on both channels (each ignores a few more).
STATUSES: Final = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}

S = TypeVar("S")
E = TypeVar("E")
T = TypeVar("T")


class WebhookError(ValueError):
    """The webhook body is not a webhook at all (not a JSON object); nothing of it was applied."""


class Status(msgspec.Struct, Generic[E], kw_only=True):
    """A message's status in a webhook, with the channel's error type ``E``."""

    id: Id
    status: Annotated[str, msgspec.Meta(max_length=32)]
    # Not used to apply a status; On-Prem checks it by hand (a msgspec pattern check was ~0.5 us
    # of the ~0.9 us a status took to decode, and a delivery carries hundreds).
    timestamp: str = "0"
    recipient_id: Annotated[str, msgspec.Meta(max_length=256)] = ""
    errors: list[E] = []


class Profile(msgspec.Struct, frozen=True):
    name: Text = ""


class Contact(msgspec.Struct, kw_only=True):
    wa_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    user_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    profile: Profile = Profile()


_contact_decoder: Final = msgspec.json.Decoder(Contact)


@final
class Batch:
    """What a delivery's items decode into, gathered in order."""

    def __init__(self) -> None:
        self.statuses: list[StatusEvent] = []
        self.inbound: list[InboundEvent] = []
        self.errors: list[ChannelError] = []
        self.unapplied: list[Unapplied] = []
        self.ignored = 0

    def note(self, unapplied: Unapplied | None) -> None:
        if unapplied is not None:
            self.unapplied.append(unapplied)

    def unmapped(self, status: str, ignored: frozenset[str], where: str) -> None:
        """A status not in ``STATUSES``: counted when the channel ignores it, else noted as unknown."""
        if status in ignored:
            self.ignored += 1
        else:
            self.note(Unapplied("unknown_status", f"{where}.status", f"unknown status {status[:32]!r}"))

    def each(
        self, raws: list[msgspec.Raw], decoder: msgspec.json.Decoder[T], problem: str, where: str
    ) -> Iterator[tuple[str, T]]:
        """``(where[i], item)`` for every item that decodes; one that does not is noted as ``problem``."""
        for i, raw in enumerate(raws):
            at = f"{where}[{i}]"
            try:
                item = jsondecode.decode(decoder, raw)
            except msgspec.DecodeError as exc:
                self.note(Unapplied(problem, at, str(exc)[:300]))
                continue
            yield at, item

    def messages(self, raws: list[msgspec.Raw], profiles: Profiles, where: str) -> None:
        """Customers' messages (``inbound_message`` reads each alone, storing what it can)."""
        for i, raw in enumerate(raws):
            event, unapplied = inbound_message.decode(raw, profiles, f"{where}[{i}]")
            self.note(unapplied)
            if event is not None:
                self.inbound.append(event)

    def events(self) -> WebhookEvents:
        return WebhookEvents(
            statuses=self.statuses,
            inbound=self.inbound,
            errors=self.errors,
            ignored=self.ignored,
            unapplied=self.unapplied,
        )


@final
@attrs.frozen
class ItemReader(Generic[S, E]):
    """One channel's way with a payload's items: its status and error types, and what each becomes.

    ``where`` is the payload's place in the delivery, ending in a dot (``""`` at the top).
    """

    status_decoder: msgspec.json.Decoder[S]
    error_decoder: msgspec.json.Decoder[E]
    add_status: Callable[[Batch, S, str], None]
    error_event: Callable[[E], ChannelError]

    def apply(
        self,
        batch: Batch,
        where: str,
        statuses: list[S],
        contacts: list[Contact],
        messages: list[msgspec.Raw],
        errors: list[E],
    ) -> None:
        """The items of a payload the typed pass read (messages stay raw: each is read alone)."""
        add_status, prefix = self.add_status, f"{where}statuses"
        for i, status in enumerate(statuses):
            add_status(batch, status, f"{prefix}[{i}]")
        profiles = Profiles()
        for contact in contacts:
            profiles.add(contact.wa_id, contact.user_id, contact.profile.name)
        batch.messages(messages, profiles, f"{where}messages")
        batch.errors.extend(map(self.error_event, errors))

    def apply_each(
        self,
        batch: Batch,
        where: str,
        statuses: list[msgspec.Raw],
        contacts: list[msgspec.Raw],
        messages: list[msgspec.Raw],
        errors: list[msgspec.Raw],
    ) -> None:
        """The typed pass failed somewhere: decode every item alone, apply the readable ones."""
        for at, status in batch.each(statuses, self.status_decoder, "bad_status", f"{where}statuses"):
            self.add_status(batch, status, at)
        profiles = Profiles()
        for _, contact in batch.each(contacts, _contact_decoder, "bad_contact", f"{where}contacts"):
            profiles.add(contact.wa_id, contact.user_id, contact.profile.name)
        batch.messages(messages, profiles, f"{where}messages")
        for _, error in batch.each(errors, self.error_decoder, "bad_error", f"{where}errors"):
            batch.errors.append(self.error_event(error))
