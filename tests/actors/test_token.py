from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from actors.credentials.token import LoginError, TokenManager, parse_expires_after
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.models import StoredToken
from dispatcher.core.store import Store

DAY = 86_400.0


class FakeApi:
    """Issues 7-day tokens on the wall clock; counts logins."""

    def __init__(self, wall: TrioWallClock) -> None:
        self.wall = wall
        self.logins: list[float] = []
        self.gate: trio.Event | None = None

    async def login(self) -> StoredToken:
        self.logins.append(trio.current_time())
        if self.gate is not None:
            await self.gate.wait()
        return StoredToken(token=f"tok{len(self.logins)}", expires_at=self.wall.now() + 7 * DAY, endpoint="")


def manager(api: FakeApi, store: Store, wall: TrioWallClock) -> TokenManager:
    return TokenManager(number="+15550000001", login=api.login, store=store, wall=wall, refresh_before=DAY)


async def test_refreshes_a_day_before_the_7_day_expiry(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    api = FakeApi(wall)
    tokens = manager(api, writer, wall)
    nursery.start_soon(tokens.run)
    await tokens.wait_ready()
    assert tokens.token == "tok1"
    await trio.sleep(6 * DAY - 1)
    assert len(api.logins) == 1
    await trio.sleep(2)
    assert len(api.logins) == 2 and tokens.token == "tok2"
    assert api.logins[1] - api.logins[0] == pytest.approx(6 * DAY)
    # And again a week later: it keeps going.
    await trio.sleep(6 * DAY + 1)
    assert len(api.logins) == 3


async def test_concurrent_401s_share_one_login(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    api = FakeApi(wall)
    tokens = manager(api, writer, wall)
    nursery.start_soon(tokens.run)
    await tokens.wait_ready()
    stale = tokens.token
    api.gate = trio.Event()
    async with trio.open_nursery() as senders:
        for _ in range(20):
            senders.start_soon(tokens.refresh, stale)
        await trio.sleep(1)
        api.gate.set()
    assert len(api.logins) == 2  # the startup login and exactly one refresh
    assert tokens.token == "tok2"
    # A 401 for the already replaced token changes nothing.
    await tokens.refresh(stale)
    assert len(api.logins) == 2


async def test_a_restart_reuses_the_stored_token(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    api = FakeApi(wall)
    first = manager(api, writer, wall)
    async with trio.open_nursery() as inner:
        inner.start_soon(first.run)
        await first.wait_ready()
        inner.cancel_scope.cancel()
    second = manager(api, writer, wall)
    nursery.start_soon(second.run)
    await second.wait_ready()
    assert second.token == "tok1" and len(api.logins) == 1


async def test_login_failures_are_retried(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    failures = 3

    async def flaky() -> StoredToken:
        nonlocal failures
        if failures:
            failures -= 1
            raise LoginError("HTTP 401")
        return StoredToken(token="good", expires_at=wall.now() + 7 * DAY, endpoint="")

    tokens = TokenManager(
        number="+1", login=flaky, store=writer, wall=wall, refresh_before=DAY, retry_delay=5
    )
    start = trio.current_time()
    nursery.start_soon(tokens.run)
    await tokens.wait_ready()
    assert tokens.token == "good" and trio.current_time() - start == pytest.approx(15.0)


def test_parse_expires_after_reads_the_on_prem_format() -> None:
    assert parse_expires_after("2021-05-01 13:42:30+00:00") == 1619876550.0
    with pytest.raises(LoginError):
        parse_expires_after("next tuesday")


async def test_numbers_that_logged_in_together_refresh_apart(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    apis = [FakeApi(wall) for _ in range(3)]
    for i, (api, spread) in enumerate(zip(apis, (0.0, 0.5, 0.999), strict=True)):
        tokens = TokenManager(
            number=f"+1555000000{i}",
            login=api.login,
            store=writer,
            wall=wall,
            refresh_before=DAY,
            spread=spread,
        )
        nursery.start_soon(tokens.run)
    await trio.sleep(14 * DAY)
    # Lead: a day, plus the number's share of a quarter of the other 6 days; every lifetime alike.
    for api, spread in zip(apis, (0.0, 0.5, 0.999), strict=True):
        gaps = [b - a for a, b in itertools.pairwise(api.logins)]
        assert gaps and all(g == pytest.approx(6 * DAY - 0.25 * spread * 6 * DAY, abs=1) for g in gaps)
    firsts = sorted(api.logins[1] for api in apis)
    assert firsts[1] - firsts[0] > DAY / 2 and firsts[2] - firsts[1] > DAY / 2


async def test_a_token_shorter_lived_than_the_lead_does_not_loop(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=1_700_000_000.0)
    logins: list[float] = []

    async def hour_token() -> StoredToken:
        logins.append(trio.current_time())
        return StoredToken(token=f"t{len(logins)}", expires_at=wall.now() + 3600, endpoint="")

    tokens = TokenManager(
        number="+15550000001", login=hour_token, store=writer, wall=wall, refresh_before=DAY, spread=0.999
    )
    nursery.start_soon(tokens.run)
    await tokens.wait_ready()
    await trio.sleep(3 * 3600)
    # The lead (a day) is longer than the token's hour: renewed at half-life, not in a loop.
    gaps = [b - a for a, b in itertools.pairwise(logins)]
    assert len(gaps) >= 5 and all(g == pytest.approx(1800, abs=1) for g in gaps)
