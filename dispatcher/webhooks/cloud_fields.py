"""Cloud webhook fields other than ``messages``: each field handed to the one part that handles it.

Meta posts template, account and number updates to the same webhook as messages
(``entry[].changes[].field``). The route authenticates the delivery as usual, applies its
messages and statuses, then gives every other change to the handler registered for its
field here: templates register ``message_template_status_update`` and its kin, number
management ``account_update`` and its kin, each in one line where the daemon is built.

An authentic delivery is always answered 200, so Meta does not redeliver it for a week
over something only this daemon can fix: a field nobody registered is counted and
skipped; a handler that fails is logged and counted, and the other changes still go to
theirs. Only a store failure (``StoreError``) goes up, so the route answers 503 and Meta
redelivers the whole delivery (handlers are idempotent: a redelivered change is applied
as if once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import final

import structlog

from dispatcher.channels.cloud_webhook import FieldChange
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import StoreError

log = structlog.get_logger()

_MAX_FIELD_LABELS = 64

FieldHandler = Callable[[NumberInfo, FieldChange], Awaitable[None]]
"""Applies one change; ``NumberInfo`` is the number whose webhook URL (and app secret) it came by."""


@final
class CloudFields:
    """Field name -> its handler; what was unhandled or failed, counted by field."""

    def __init__(self) -> None:
        self._handlers: dict[str, FieldHandler] = {}
        self.unhandled: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def register(self, field: str, handler: FieldHandler) -> None:
        """``handler`` applies every change of ``field``; a field has one handler."""
        if field == "messages":
            raise ValueError("the messages field is the inbox's")
        if field in self._handlers:
            raise ValueError(f"the webhook field {field!r} already has a handler")
        self._handlers[field] = handler

    def fields(self) -> list[str]:
        return sorted(self._handlers)

    async def dispatch(self, info: NumberInfo, changes: Iterable[FieldChange]) -> None:
        """Each change to its field's handler, in the order Meta sent them.

        Raises:
            StoreError: a handler could not write; the delivery should be redelivered.
        """
        for change in changes:
            handler = self._handlers.get(change.field)
            if handler is None:
                # Meta's field names, from an authentic delivery: a bounded set; kept bounded anyway.
                known = change.field in self.unhandled or len(self.unhandled) < _MAX_FIELD_LABELS
                self.unhandled[change.field if known else "other"] += 1
                log.debug("webhook.field_unhandled", number=info.number, field=change.field[:64])
                continue
            try:
                await handler(info, change)
            except StoreError:
                raise
            except Exception as exc:
                self.failed[change.field] += 1
                log.error(
                    "webhook.field_failed",
                    number=info.number,
                    field=change.field,
                    waba=change.waba_id[:40],
                    where=change.where,
                    exc_info=exc,
                )
