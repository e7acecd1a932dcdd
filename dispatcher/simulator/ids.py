"""Opaque ids shaped like the platform's: ``gBGG...`` for sent messages, ``ABGG...`` for received."""

from __future__ import annotations

import base64
import itertools
import os
from typing import final


@final
class IdMaker:
    """Unique within one simulator: a random salt plus a counter, base64url (no ``wamid.`` prefix)."""

    def __init__(self) -> None:
        self._salt = os.urandom(7)
        self._count = itertools.count(1)

    def new(self, prefix: str) -> str:
        raw = self._salt + next(self._count).to_bytes(8, "big")
        return prefix + base64.urlsafe_b64encode(raw).decode()
