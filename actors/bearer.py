"""Credentials for a long-lived bearer token with no login flow (Cloud API system-user tokens).

There is nothing to renew: when Meta refuses the token (190), the operator
replaces it (rotates the file or environment variable the config points at).
The actor reports the refusal (``refused``): unless the source already holds
another token, the credentials turn *invalid*, ``wait_ready`` blocks, and
``run`` re-reads the source every ``recheck`` seconds until a different token
appears. Nothing retries with a token known to be bad. ``refresh`` (also what
``wadispatch token refresh`` calls) re-reads the source now and never blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, final, runtime_checkable

import structlog
import trio

log = structlog.get_logger()


@runtime_checkable
class RefusableCredentials(Protocol):
    def refused(self, token: str | None) -> None:
        """The API refused ``token`` for good: stop handing it out until it is replaced."""
        ...


@final
class BearerCredentials:
    def __init__(self, read: Callable[[], str], *, recheck: float = 30.0) -> None:
        """``read()`` returns the current token (raising if the source is unreadable)."""
        self._read = read
        self._recheck = recheck
        self._token = read()
        self._ready = trio.Event()
        self._ready.set()
        self.refreshes = 0  # tokens replaced while running

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def valid(self) -> bool:
        return self._ready.is_set()

    @property
    def expires_in(self) -> float | None:
        return None  # system-user tokens carry no expiry we can read

    def auth_header(self) -> bytes:
        return b"Bearer " + self._token.encode()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def refused(self, token: str | None) -> None:
        if token != self._token or self._reload():
            return  # already replaced
        if self._ready.is_set():
            self._ready = trio.Event()
            log.error("token.refused", action="replace the access token; sends wait until then")

    async def refresh(self, stale: str | None) -> None:
        """Take a new token from the source if it holds one; never waits."""
        await trio.lowlevel.checkpoint()
        if stale == self._token:
            self._reload()

    def _reload(self) -> bool:
        """True if the source now holds a different token."""
        try:
            fresh = self._read()
        except Exception as exc:  # an unreadable file must not kill the actor
            log.warning("token.unreadable", error=str(exc))
            return False
        if not fresh or fresh == self._token:
            return False
        self._token = fresh
        self.refreshes += 1
        self._ready.set()
        log.info("token.replaced")
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._recheck)
            if not self._ready.is_set():
                self._reload()
