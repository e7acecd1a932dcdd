"""The number's On-Premises API login token: login, persist, refresh early, single-flight.

Tokens last 7 days (``expires_after`` in the login answer). The manager logs in
again ``refresh_before`` seconds before expiry (its ``due_at``; the actor's
host wakes it then, even an idle one), and at once when a request comes back
401. Concurrent 401s share one login (single flight): the first
caller logs in, the others wait for its result. The token is persisted so a
restart reuses it instead of logging in again; it is never logged.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final, final

import msgspec
import structlog
import trio

from actors.transport import Transport, TransportError
from dispatcher.core.clock import WallClock
from dispatcher.core.models import StoredToken, record_encoder, token_decoder
from dispatcher.core.store import Store, StoreError, WriteTxn, number_key

log = structlog.get_logger()

SPREAD_SHARE: Final = 0.25  # the most of a token's remaining margin a number's refresh moves earlier


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
    """Holds the current token for one number; its upkeep (or ``run``) keeps it fresh."""

    __slots__ = (
        "_lead",
        "_login",
        "_number",
        "_ready",
        "_refresh_before",
        "_refreshing",
        "_retry_at",
        "_retry_delay",
        "_spread",
        "_store",
        "_token",
        "_wall",
        "refreshes",
    )

    def __init__(
        self,
        *,
        number: str,
        login: Login,
        store: Store,
        wall: WallClock,
        refresh_before: float,
        spread: float = 0.0,
        retry_delay: float = 5.0,
    ) -> None:
        """``spread`` in [0, 1): this number's share of the stretch (see ``_set``)."""
        self._number = number
        self._login = login
        self._store = store
        self._wall = wall
        self._refresh_before = refresh_before
        self._lead = refresh_before  # how long before expiry the next login is due
        self._spread = spread
        self._retry_delay = retry_delay
        self._token: StoredToken | None = None
        self._refreshing: trio.Event | None = None
        self._ready: trio.Event | None = None  # made by the first waiter, while there is no token
        self._retry_at = -math.inf  # after a failed login: not before this trio time
        self.refreshes = 0

    @property
    def token(self) -> str | None:
        return self._token.token if self._token is not None else None

    @property
    def ready(self) -> bool:
        return self._token is not None

    @property
    def expires_in(self) -> float | None:
        """Seconds of life left, for health and metrics."""
        return None if self._token is None else self._token.expires_at - self._wall.now()

    async def wait_ready(self) -> None:
        """Return once a token is available."""
        if self._token is not None:
            await trio.lowlevel.checkpoint()
            return
        if self._ready is None:
            self._ready = trio.Event()
        await self._ready.wait()

    def auth_header(self) -> bytes:
        if self._token is None:
            raise RuntimeError("no token yet: the TokenManager has not logged in")
        return b"Bearer " + self._token.token.encode()

    def restore(self) -> None:
        """Reuse the persisted token unless it is due for refresh (a restart skips a login)."""
        stored = self._store.get(b"tokens", number_key(self._number))
        if stored is None or self._token is not None:
            return
        token = token_decoder.decode(stored)
        if token.expires_at - self._wall.now() > self._refresh_before:
            self._set(token)
            log.info("token.reused", expires_in=round(token.expires_at - self._wall.now()))

    def due_at(self) -> float:
        """Trio time of the next login: ``refresh_before`` ahead of expiry, now without a token,
        never before the retry delay after a failure."""
        if self._token is None:
            return self._retry_at
        # Wall-clock expiry converted to a trio deadline, so MockClock drives it.
        due = trio.current_time() + (self._token.expires_at - self._wall.now()) - self._lead
        return max(due, self._retry_at)

    async def upkeep(self) -> None:
        """Log in if it is time to; a failure is logged and retried ``retry_delay`` later."""
        if self.due_at() > trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        try:
            await self.refresh(self.token)
        except (LoginError, TransportError) as exc:
            self._retry_at = trio.current_time() + self._retry_delay
            event = "token.login_failed" if self._token is None else "token.refresh_failed"
            log.warning(event, error=str(exc), retry_in=self._retry_delay)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Standalone upkeep (an actor uses its host's shared timers instead): load or obtain a
        token, ``started()``, then refresh it ahead of expiry until cancelled."""
        self.restore()
        while self._token is None:
            await trio.sleep_until(self.due_at())
            await self.upkeep()
        task_status.started()
        while True:
            # A refresh by someone else only moves the due time later: sleeping until the
            # older one costs a no-op upkeep, never a missed refresh.
            await trio.sleep_until(self.due_at())
            await self.upkeep()

    async def refresh(self, stale: str | None) -> None:
        """Log in again unless the token already changed from ``stale`` (single flight)."""
        while self._refreshing is not None:
            await self._refreshing.wait()
        if self._token is not None and self._token.token != stale:
            return  # a concurrent caller already replaced the stale token
        self._refreshing = done = trio.Event()
        try:
            token = await self._login()
            self._set(token)
            self._retry_at = -math.inf
            self.refreshes += 1
            log.info("token.refreshed", expires_in=round(token.expires_at - self._wall.now()))
            # Persisted only so a restart can skip a login; losing it costs one login.
            try:
                await self._store.write(_save_token(self._number, token))
            except StoreError as exc:
                log.warning("token.not_saved", error=str(exc))
        finally:
            self._refreshing = None
            done.set()

    def _set(self, token: StoredToken) -> None:
        """Keep ``token``; its refresh is due ``refresh_before`` ahead of expiry, stretched by
        up to a quarter of the rest of its life by ``spread``: numbers that logged in together
        (a first start, an endpoint back from an outage) would otherwise all log in again at
        the same moment, every token lifetime. The stretch never brings the refresh before
        three quarters of that rest."""
        life = token.expires_at - self._wall.now()
        margin = max(0.0, life - self._refresh_before)
        # Never more than half its life: a token shorter-lived than refresh_before is renewed
        # at half-life, not at once after every login.
        self._lead = min(self._refresh_before + SPREAD_SHARE * self._spread * margin, life / 2)
        self._token = token
        if self._ready is not None:
            self._ready.set()
            self._ready = None


def _save_token(number: str, token: StoredToken) -> Callable[[WriteTxn], None]:
    def fn(txn: WriteTxn) -> None:
        txn.put(b"tokens", number_key(number), record_encoder.encode(token))

    return fn
