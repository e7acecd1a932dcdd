"""Messaging Services (``MessagingServiceSid``, MG...): a sender pool per account.

A create naming a service instead of a ``From`` gets a number of the pool, and
the same recipient keeps getting the same number (sticky sender): the choice
is stored in LMDB (``meta``, key ``sticky NUL service NUL recipient``) in the
same transaction as the message, so it survives restarts and pool growth.

The first choice for a recipient, in order of preference:

1. a number of the pool whose 24 h window with the recipient is open (the
   customer wrote to it last), since only that number may send free-form;
2. otherwise a number picked by rendezvous hashing of (number, recipient):
   stable, spread evenly, and the same on every front door whatever runs
   where (a number whose actor is stopped keeps the message in its outbox).

The sticky choice is kept in the bucket of the number chosen (with its message),
so reading it asks the buckets of the pool's numbers, in pool order, and takes
the first that names a pool number of its own bucket: the same answer on every
front door and every retry, so a retried create is judged (idempotency) in the
same bucket.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Final, final

from dispatcher.config import ServiceConfig
from dispatcher.core import keys, window
from dispatcher.core.buckets import Buckets
from dispatcher.core.store import SEP, WriteTxn
from dispatcher.core.twilio import TwilioError

SERVICE_SID: Final = re.compile(r"^MG[0-9a-fA-F]{32}$")


def _sticky_key(service_sid: str, to: str) -> bytes:
    return b"sticky" + SEP + keys.part(service_sid) + SEP + keys.part(to)


def _score(number: str, to: str) -> bytes:
    return hashlib.blake2b(f"{number}|{to}".encode(), digest_size=8).digest()


@final
class Services:
    def __init__(self, services: Iterable[ServiceConfig], buckets: Buckets) -> None:
        self._services = {s.sid: s for s in services}
        self._buckets = buckets

    def get(self, account_sid: str, sid: str) -> ServiceConfig:
        """The account's service ``sid``; TwilioError 21705 if it has none such."""
        service = self._services.get(sid) if SERVICE_SID.match(sid) else None
        if service is None or service.account != account_sid:
            raise TwilioError(400, 21705, f"The Messaging Service Sid {sid} is invalid.")
        return service

    def sticky(self, service: ServiceConfig, to: str) -> str | None:
        """The pool number ``to`` sticks to, if any (see the module's docstring)."""
        key = _sticky_key(service.sid, to)
        buckets = self._buckets
        asked: set[int] = set()
        for number in service.numbers:
            index = buckets.index(number)
            if index in asked:
                continue
            asked.add(index)
            raw = buckets.stores[index].get(b"meta", key)
            if raw is None:
                continue
            remembered = raw.decode()
            if remembered in service.numbers and buckets.index(remembered) == index:
                return remembered
        return None

    def pick(self, service: ServiceConfig, to: str, now: float) -> str:
        """The sender for ``to``: its sticky number if still in the pool, else a fresh choice."""
        remembered = self.sticky(service, to)
        if remembered is not None:
            return remembered
        best_last = None
        choice = None
        for number in service.numbers:
            last = window.last_inbound(self._buckets.for_number(number), number, to)
            if (
                last is not None
                and now - last < window.WINDOW_SECONDS
                and (best_last is None or last > best_last)
            ):
                best_last, choice = last, number
        if choice is not None:
            return choice
        return max(service.numbers, key=lambda n: _score(n, to))

    @staticmethod
    def remember(txn: WriteTxn, service_sid: str, to: str, number: str) -> None:
        """Inside a write: ``to`` now sticks to ``number`` in this service."""
        key = _sticky_key(service_sid, to)
        if txn.get(b"meta", key) != number.encode():
            txn.put(b"meta", key, number.encode())
