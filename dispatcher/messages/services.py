"""Messaging Services (``MessagingServiceSid``, MG...): a sender pool per account.

A create naming a service instead of a ``From`` gets a number of the pool, and
the same recipient keeps getting the same number (sticky sender): the choice
is stored in LMDB (``meta``, key ``sticky NUL service NUL recipient``) in the
same transaction as the message, so it survives restarts and pool growth.

The first choice for a recipient, in order of preference:

1. a number of the pool whose 24 h window with the recipient is open (the
   customer wrote to it last), since only that number may send free-form;
2. otherwise a number picked by rendezvous hashing of (number, recipient),
   preferring numbers whose actor is running: stable, and spread evenly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Final, final

from dispatcher.config import ServiceConfig
from dispatcher.core import keys, window
from dispatcher.core.store import SEP, Store, WriteTxn
from dispatcher.core.twilio import TwilioError

SERVICE_SID: Final = re.compile(r"^MG[0-9a-fA-F]{32}$")


def _sticky_key(service_sid: str, to: str) -> bytes:
    return b"sticky" + SEP + keys.part(service_sid) + SEP + keys.part(to)


def _score(number: str, to: str) -> bytes:
    return hashlib.blake2b(f"{number}|{to}".encode(), digest_size=8).digest()


@final
class Services:
    def __init__(self, services: Iterable[ServiceConfig], store: Store) -> None:
        self._services = {s.sid: s for s in services}
        self._store = store

    def get(self, account_sid: str, sid: str) -> ServiceConfig:
        """The account's service ``sid``; TwilioError 21705 if it has none such."""
        service = self._services.get(sid) if SERVICE_SID.match(sid) else None
        if service is None or service.account != account_sid:
            raise TwilioError(400, 21705, f"The Messaging Service Sid {sid} is invalid.")
        return service

    def sticky(self, service_sid: str, to: str) -> str | None:
        raw = self._store.get(b"meta", _sticky_key(service_sid, to))
        return None if raw is None else raw.decode()

    def pick(self, service: ServiceConfig, to: str, now: float, running: Callable[[str], bool]) -> str:
        """The sender for ``to``: its sticky number if still in the pool, else a fresh choice."""
        remembered = self.sticky(service.sid, to)
        if remembered is not None and remembered in service.numbers:
            return remembered
        best_last = None
        choice = None
        for number in service.numbers:
            last = window.last_inbound(self._store, number, to)
            if (
                last is not None
                and now - last < window.WINDOW_SECONDS
                and (best_last is None or last > best_last)
            ):
                best_last, choice = last, number
        if choice is not None:
            return choice
        candidates = [n for n in service.numbers if running(n)] or list(service.numbers)
        return max(candidates, key=lambda n: _score(n, to))

    @staticmethod
    def remember(txn: WriteTxn, service_sid: str, to: str, number: str) -> None:
        """Inside a write: ``to`` now sticks to ``number`` in this service."""
        key = _sticky_key(service_sid, to)
        if txn.get(b"meta", key) != number.encode():
            txn.put(b"meta", key, number.encode())
