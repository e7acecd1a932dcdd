"""Update and delete of a Message: cancel, body redaction, removal, with Twilio's rules and codes.

- ``Status=canceled`` cancels a message still waiting to be sent (30409 once it
  is on its way or finished).
- ``Body=`` (empty) redacts the body of a message that is no longer in progress.
- One of the two per request, never both, nothing else (30400).
- DELETE removes a finished message (20009 while it is in progress).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, final

import structlog

from dispatcher.core import ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord
from dispatcher.core.params import Params, first
from dispatcher.core.store import StoreError, WriteTxn
from dispatcher.core.twilio import TwilioError, message_uri, store_unavailable
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.handoff import Handoff

log = structlog.get_logger()

T = TypeVar("T")


def _bad_update(detail: str) -> TwilioError:
    return TwilioError(400, 30400, f"Parameters are not valid: {detail}")


@final
class Edits:
    def __init__(self, *, buckets: Buckets, wall: WallClock, gateway: Gateway, handoff: Handoff) -> None:
        self._buckets = buckets
        self._wall = wall
        self._gateway = gateway  # fetch: another account's sid is a 404
        self._handoff = handoff  # the sender's actor, held off a message being canceled

    async def update(self, account_sid: str, sid: str, params: Params) -> MessageRecord:
        status, body = first(params, "Status"), first(params, "Body")
        if status is not None and body is not None:
            raise _bad_update("cancel (Status) and redact (Body) cannot be combined in one request.")
        if status is not None:
            if status != "canceled":
                raise _bad_update(f"Status can only be set to 'canceled', not {status!r}.")
            return await self.cancel(account_sid, sid)
        if body is not None:
            if body != "":
                raise _bad_update("a message body can only be redacted: send an empty Body.")
            return await self._write(
                account_sid,
                sid,
                ledger.redact(sid, account_sid, self._wall.now()),
                TwilioError(
                    400,
                    30400,
                    "Parameters are not valid: a message body can be redacted once it has been sent.",
                ),
            )
        raise _bad_update("give Status=canceled or an empty Body.")

    async def cancel(self, account_sid: str, sid: str) -> MessageRecord:
        """Take a queued message out of its outbox; its actor is held off it meanwhile."""
        record = self._gateway.fetch(account_sid, sid)  # 20404 for another account's sid
        actor = self._handoff.actor(record.from_number)
        cannot = TwilioError(
            400, 30409, "This message cannot be canceled: it is no longer waiting to be sent."
        )
        if actor is not None and not actor.hold(sid):
            raise cannot  # its send has started
        try:
            canceled = await self._write(
                account_sid, sid, ledger.cancel(sid, account_sid, self._wall.now()), cannot
            )
        finally:
            if actor is not None:
                actor.release(sid)
        log.info("message.canceled", sid=sid, number=canceled.from_number)
        return canceled

    async def delete(self, account_sid: str, sid: str) -> None:
        await self._write(
            account_sid,
            sid,
            ledger.remove(sid, account_sid),
            TwilioError(409, 20009, "Cannot delete this resource before it is complete."),
        )
        log.info("message.deleted", sid=sid)

    async def _write(
        self, account_sid: str, sid: str, fn: Callable[[WriteTxn], T], wrong_state: TwilioError
    ) -> T:
        found = self._buckets.message(sid)
        try:
            if found is None:
                raise ledger.MessageNotFound(sid)
            return await found[0].write(fn)
        except ledger.MessageNotFound:
            uri = message_uri(account_sid, sid)
            raise TwilioError(404, 20404, f"The requested resource {uri} was not found") from None
        except ledger.WrongState as exc:
            raise TwilioError(
                wrong_state.status, wrong_state.code, f"{wrong_state.message} (status {exc.status})"
            ) from None
        except StoreError as exc:
            log.error("message.store_failed", sid=sid, error=str(exc))
            raise store_unavailable(exc, "the change") from exc
