"""Credentials for a long-lived bearer token with no login flow (Cloud API system-user tokens).

There is nothing to renew: when Meta refuses the token (190), the operator
replaces it (rotates the file or environment the config points at). So
``refresh`` re-reads the source; if it still yields the refused token, the
credentials turn *invalid*, ``wait_ready`` blocks, and ``run`` re-reads the
source every ``recheck`` seconds until a different token appears. Nothing
retries with a token known to be bad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import structlog
import trio

log = structlog.get_logger()


@final
class BearerCredentials:
    def __init__(self, read: Callable[[], str], *, recheck: float = 30.0) -> None:
        """``read()`` returns the current token (raising if the source is unreadable)."""
        self._read = read
        self._recheck = recheck
        self._token = read()
        self._ready = trio.Event()
        self._ready.set()
        self._refused: str | None = None  # the token Meta refused, while invalid

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def valid(self) -> bool:
        return self._ready.is_set()

    def auth_header(self) -> bytes:
        return b"Bearer " + self._token.encode()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def refresh(self, stale: str | None) -> None:
        """``stale`` was refused: take a new token from the source, or wait until one appears."""
        if stale != self._token:
            return  # someone already replaced it
        if self._reload():
            return
        if self._refused is None:
            self._refused = stale
            self._ready = trio.Event()
            log.error("token.refused", action="replace the access token; sends wait until then")
        await self._ready.wait()

    def _reload(self) -> bool:
        """True if the source now holds a different token than the refused one."""
        try:
            fresh = self._read()
        except Exception as exc:  # an unreadable file must not kill the actor
            log.warning("token.unreadable", error=str(exc))
            return False
        if not fresh or fresh == self._token:
            return False
        self._token = fresh
        self._refused = None
        self._ready.set()
        log.info("token.replaced")
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._recheck)
            if not self._ready.is_set():
                self._reload()
