"""The number's On-Premises API login token: login, persist, refresh early, single-flight.

Tokens last 7 days (``expires_after`` in the login answer). The manager logs in
again ``refresh_before`` seconds before expiry, and at once when a request
comes back 401. Concurrent 401s share one login (single flight): the first
caller logs in, the others wait for its result. The token is persisted so a
restart reuses it instead of logging in again; it is never logged.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import final

import msgspec
import structlog
import trio

from actors.transport import Transport, TransportError
from dispatcher.clock import WallClock
from dispatcher.models import StoredToken, record_encoder, token_decoder
from dispatcher.store import Store, WriteTxn, number_key

log = structlog.get_logger()


class LoginError(Exception):
    """The API refused the login (bad credentials, password change required...)."""


class _LoginUser(msgspec.Struct):
    token: str
    expires_after: str


class _LoginAnswer(msgspec.Struct):
    users: list[_LoginUser]


_login_decoder = msgspec.json.Decoder(_LoginAnswer)


def parse_expires_after(value: str) -> float:
    """``"2021-05-01 13:42:30+00:00"`` (On-Prem's format) -> Unix seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise LoginError(f"unreadable expires_after {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def login(transport: Transport, username: str, password: str, wall: WallClock) -> StoredToken:
    """``POST /v1/users/login`` with HTTP Basic; returns the token and its wall-clock expiry."""
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    resp = await transport.request(
        b"POST",
        b"/v1/users/login",
        [(b"authorization", b"Basic " + basic.encode()), (b"content-type", b"application/json")],
        b"",
    )
    if resp.status != 200:
        raise LoginError(f"login refused: HTTP {resp.status}: {resp.body[:200]!r}")
    try:
        user = _login_decoder.decode(resp.body).users[0]
    except (msgspec.DecodeError, IndexError) as exc:
        raise LoginError("login answer has no token") from exc
    expires_at = parse_expires_after(user.expires_after)
    if expires_at <= wall.now():
        raise LoginError("login returned an already expired token")
    return StoredToken(token=user.token, expires_at=expires_at, endpoint="")


Login = Callable[[], Awaitable[StoredToken]]


@final
class TokenManager:
    """Holds the current token for one number; ``run`` keeps it fresh."""

    def __init__(
        self,
        *,
        number: str,
        login: Login,
        store: Store,
        wall: WallClock,
        refresh_before: float,
        retry_delay: float = 5.0,
    ) -> None:
        self._number = number
        self._login = login
        self._store = store
        self._wall = wall
        self._refresh_before = refresh_before
        self._retry_delay = retry_delay
        self._token: StoredToken | None = None
        self._refreshing: trio.Event | None = None
        self._changed = trio.Event()
        self._ready = trio.Event()
        self.refreshes = 0

    @property
    def token(self) -> str | None:
        return self._token.token if self._token is not None else None

    @property
    def expires_in(self) -> float | None:
        """Seconds of life left, for health and metrics."""
        return None if self._token is None else self._token.expires_at - self._wall.now()

    async def wait_ready(self) -> None:
        """Return once a token is available."""
        await self._ready.wait()

    def auth_header(self) -> bytes:
        if self._token is None:
            raise RuntimeError("no token yet: TokenManager.run() has not started")
        return b"Bearer " + self._token.token.encode()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load or obtain a token, then refresh it ahead of expiry forever."""
        stored = self._store.get(b"tokens", number_key(self._number))
        if stored is not None:
            token = token_decoder.decode(stored)
            if token.expires_at - self._wall.now() > self._refresh_before:
                self._token = token
                self._ready.set()
                log.info("token.reused", expires_in=round(token.expires_at - self._wall.now()))
        while self._token is None:
            try:
                await self.refresh(None)
            except (LoginError, TransportError) as exc:
                log.warning("token.login_failed", error=str(exc), retry_in=self._retry_delay)
                await trio.sleep(self._retry_delay)
        task_status.started()
        while True:
            assert self._token is not None
            # Wall-clock expiry converted to a trio deadline, so MockClock drives it.
            due = trio.current_time() + (self._token.expires_at - self._wall.now()) - self._refresh_before
            with trio.move_on_at(due):
                await self._changed.wait()  # someone else refreshed: recompute the deadline
                self._changed = trio.Event()
                continue
            try:
                await self.refresh(self._token.token)
            except (LoginError, TransportError) as exc:
                log.warning("token.refresh_failed", error=str(exc), retry_in=self._retry_delay)
                await trio.sleep(self._retry_delay)

    async def refresh(self, stale: str | None) -> None:
        """Log in again unless the token already changed from ``stale`` (single flight)."""
        while self._refreshing is not None:
            await self._refreshing.wait()
        if self._token is not None and self._token.token != stale:
            return  # a concurrent caller already replaced the stale token
        self._refreshing = done = trio.Event()
        try:
            token = await self._login()
            self._token = token
            self._ready.set()
            self.refreshes += 1
            self._changed.set()
            log.info("token.refreshed", expires_in=round(token.expires_at - self._wall.now()))
            # Persisted only so a restart can skip a login; losing it costs one login.
            await self._store.write(_save_token(self._number, token))
        finally:
            self._refreshing = None
            done.set()


def _save_token(number: str, token: StoredToken) -> Callable[[WriteTxn], None]:
    def fn(txn: WriteTxn) -> None:
        txn.put(b"tokens", number_key(number), record_encoder.encode(token))

    return fn
