"""The gateway: what the HTTP routes call. Validates, commits, hands off to actors.

Kept apart from the web framework so it is tested directly, and so every
intake path (Twilio form, JSON, batch) shares one set of rules.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from typing import Final, final

import attrs
import structlog

from dispatcher import ledger
from dispatcher.channels import onprem
from dispatcher.clock import WallClock
from dispatcher.frontdoor.twilio import CHANNEL_PREFIX, TwilioError
from dispatcher.models import MessageRecord, new_sid
from dispatcher.store import Store, StoreError
from dispatcher.supervisor import Supervisor

log = structlog.get_logger()

MAX_BODY: Final = 1600  # Twilio's limit for a (concatenated) message body
_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")


@attrs.frozen
class NumberInfo:
    number: str
    account_sid: str
    webhook_secret: str
    status_callback: str | None = None


@attrs.frozen
class SendRequest:
    """A create request after form/JSON decoding, before validation."""

    to: str | None
    from_: str | None
    body: str | None
    status_callback: str | None = None


def parse_address(value: str, *, field: str, code: int) -> str:
    """``whatsapp:+15551234567`` (or bare E.164) -> ``+15551234567``."""
    raw = value.strip()
    if raw.startswith(CHANNEL_PREFIX):
        raw = raw[len(CHANNEL_PREFIX) :]
    if not _E164.match(raw):
        raise TwilioError(400, code, f"The '{field}' number {value} is not a valid phone number.")
    return raw


@final
class Gateway:
    def __init__(
        self,
        *,
        store: Store,
        supervisor: Supervisor,
        accounts: Mapping[str, str],
        numbers: Mapping[str, NumberInfo],
        wall: WallClock,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.configure(accounts, numbers)
        self.wall = wall
        # Numbers being drained by an operator: no new messages for them.
        self.draining: set[str] = set()
        self._channel = onprem.OnPremChannel()

    def configure(self, accounts: Mapping[str, str], numbers: Mapping[str, NumberInfo]) -> None:
        """Install the accounts and numbers of a (re)loaded config."""
        self._accounts = dict(accounts)  # sid -> auth token
        self.numbers = dict(numbers)
        self._by_digits = {n.lstrip("+"): info for n, info in self.numbers.items()}

    # -- auth ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None, account_sid: str) -> None:
        """HTTP Basic ``AccountSid:AuthToken`` that must match the account in the path."""
        if authorization and authorization.startswith("Basic "):
            try:
                user, _, secret = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, secret = "", ""
            token = self._accounts.get(user)
            if token is not None and hmac.compare_digest(secret.encode(), token.encode()):
                if user != account_sid:
                    raise TwilioError(403, 20003, "Authenticate: this account cannot access that resource")
                return
        raise TwilioError(401, 20003, "Authenticate")

    def auth_token(self, account_sid: str) -> str | None:
        return self._accounts.get(account_sid)

    # -- messages -----------------------------------------------------------------

    def validate(self, account_sid: str, req: SendRequest) -> MessageRecord:
        if not req.to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        to = parse_address(req.to, field="To", code=21211)
        if not req.from_:
            raise TwilioError(400, 21603, "A 'From' phone number is required.")
        from_ = parse_address(req.from_, field="From", code=21212)
        info = self.numbers.get(from_)
        if info is None or info.account_sid != account_sid:
            raise TwilioError(
                400, 63007, f"Twilio could not find a Channel with the specified From address: {req.from_}"
            )
        if from_ in self.draining:
            raise TwilioError(
                503, 20503, f"Service unavailable: {from_} is being drained and accepts no new messages."
            )
        if to == from_:
            raise TwilioError(
                400, 21211, f"The 'To' number {req.to} cannot be the same as the 'From' number."
            )
        if not req.body:
            raise TwilioError(400, 21602, "Message body is required.")
        if len(req.body) > MAX_BODY:
            raise TwilioError(
                400, 21617, f"The concatenated message body exceeds the {MAX_BODY} character limit."
            )
        now = self.wall.now()
        return MessageRecord(
            sid=new_sid(),
            account_sid=account_sid,
            from_number=from_,
            to_number=to,
            body=req.body,
            status="queued",
            date_created=now,
            date_updated=now,
            status_callback=req.status_callback or info.status_callback,
        )

    async def create(self, account_sid: str, req: SendRequest) -> MessageRecord:
        """Validate, commit durably (record + outbox entry, one fsync shared), wake the actor."""
        record = self.validate(account_sid, req)
        try:
            seq = await self.store.write(ledger.accept(record))
        except StoreError as exc:
            log.error("message.store_failed", sid=record.sid, error=str(exc))
            raise TwilioError(503, 20503, "Service unavailable: the message could not be stored.") from exc
        actor = self.supervisor.actor(record.from_number)
        if actor is not None:
            actor.notify(seq, record)
        log.debug("message.accepted", sid=record.sid, number=record.from_number, seq=seq)
        return record

    def fetch(self, account_sid: str, sid: str) -> MessageRecord:
        raw = self.store.get(b"messages", ledger.sid_key(sid))
        if raw is not None:
            record = ledger.load(raw)
            if record.account_sid == account_sid:
                return record
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"
        raise TwilioError(404, 20404, f"The requested resource {uri} was not found")

    # -- webhooks from WhatsApp ------------------------------------------------------

    def webhook_number(self, digits: str, secret: str) -> NumberInfo | None:
        """The number a webhook path names, if its secret matches (constant time)."""
        info = self._by_digits.get(digits)
        if info is None or not hmac.compare_digest(secret.encode(), info.webhook_secret.encode()):
            return None
        return info

    async def on_webhook(self, info: NumberInfo, hook: onprem.Webhook) -> int:
        """Apply every status of a webhook; returns how many moved a message forward."""
        now = self.wall.now()
        moved = 0
        for status in hook.statuses:
            twilio_status = onprem.STATUS_MAP.get(status.status)
            if twilio_status is None:
                log.info("webhook.status_ignored", number=info.number, status=status.status)
                continue
            code = message = None
            if status.errors:
                code, message = (
                    self._channel.twilio_code(status.errors[0].code),
                    status.errors[0].title or None,
                )
            updated = await self.store.write(
                ledger.apply_status(status.id, twilio_status, code, message, now)
            )
            if updated is not None:
                moved += 1
                actor = self.supervisor.actor(info.number)
                if actor is not None:
                    actor.note_status(updated.status, updated.error_code)
                log.info(
                    "message.status",
                    number=info.number,
                    sid=updated.sid,
                    wamid=status.id,
                    status=updated.status,
                    error_code=updated.error_code,
                )
        for error in hook.errors:
            log.warning("webhook.system_error", number=info.number, code=error.code, title=error.title)
        return moved
