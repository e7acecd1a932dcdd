"""Credentials for a long-lived bearer token with no login flow (Cloud API system-user tokens).

There is nothing to renew: when Meta refuses the token (190), the operator
replaces it (rotates the file or environment variable the config points at).
The actor reports the refusal (``refused``): unless the source already holds
another token, the credentials turn *invalid*, ``wait_ready`` blocks, and
its upkeep re-reads the source every ``recheck`` seconds until a different token
appears (its ``due_at``: the actor's host wakes it for that). Nothing retries
with a token known to be bad. ``refresh`` (also what
``wadispatch token refresh`` calls) re-reads the source now and never blocks.
"""

from __future__ import annotations

import math
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
    __slots__ = ("_read", "_ready", "_recheck", "_recheck_at", "_scheme", "_token", "refreshes")

    def __init__(self, read: Callable[[], str], *, recheck: float = 30.0, scheme: bytes = b"Bearer ") -> None:
        """``read()`` returns the current token (raising if the source is unreadable); ``scheme``
        leads it in ``auth_header`` (``b"Basic "``; ``b""`` for a bare API key)."""
        self._read = read
        self._scheme = scheme
        self._recheck = recheck
        self._token = read()
        # While refused: the Event sends wait on; None while the token is good.
        self._ready: trio.Event | None = None
        self._recheck_at = math.inf  # next re-read of the source while refused
        self.refreshes = 0  # tokens replaced while running

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def valid(self) -> bool:
        return self._ready is None

    @property
    def ready(self) -> bool:
        return self._ready is None

    @property
    def expires_in(self) -> float | None:
        return None  # system-user tokens carry no expiry we can read

    def auth_header(self) -> bytes:
        return self._scheme + self._token.encode()

    async def wait_ready(self) -> None:
        if self._ready is None:
            await trio.lowlevel.checkpoint()
        else:
            await self._ready.wait()

    def refused(self, token: str | None) -> None:
        if token != self._token or self._reload():
            return  # already replaced
        if self._ready is None:
            self._ready = trio.Event()
            self._recheck_at = trio.current_time() + self._recheck
            log.error("token.refused", action="replace the access token; sends wait until then")

    async def refresh(self, stale: str | None) -> None:
        """Take a new token from the source if it holds one; never waits."""
        await trio.lowlevel.checkpoint()
        if stale == self._token:
            self._reload()

    def restore(self) -> None:
        """Nothing persisted: the token is read from its source at construction."""

    def due_at(self) -> float:
        """While refused: the next re-read of the source; otherwise never."""
        return self._recheck_at

    async def upkeep(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._ready is not None and self._recheck_at <= trio.current_time():
            self._recheck_at = trio.current_time() + self._recheck
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
        if self._ready is not None:
            ready, self._ready = self._ready, None
            self._recheck_at = math.inf
            ready.set()
        log.info("token.replaced")
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Standalone upkeep (an actor uses its host's shared timers instead)."""
        task_status.started()
        while True:
            await trio.sleep(self._recheck)
            if self._ready is not None:
                self._reload()
