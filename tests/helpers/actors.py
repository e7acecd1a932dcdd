"""Actors over fakes (no simulator, no sockets), for MockClock tests of what an actor decides.

``onprem_actor`` sends to a ``FakeApi``, ``cloud_actor`` to a ``FakeGraph``; ``submit``
stores a message from their ``NUMBER``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from actors.credentials.bearer import BearerCredentials
from actors.credentials.token import TokenManager, login
from actors.lease import ALWAYS_OPEN, SendLease
from actors.number import NumberActor
from actors.pacing.pairrate import PairLimiter
from actors.pacing.ratelimit import TokenBucket
from actors.pacing.tier import TierBudget
from actors.policy import AmbiguousPolicy, DeliveryPolicy
from actors.queues import DEFAULT_WINDOW
from actors.unrecorded import Unrecorded
from dispatcher.channels.cloud import CloudChannel
from dispatcher.channels.onprem import OnPremChannel
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store
from tests.helpers import messages
from tests.helpers.configs import PNID
from tests.helpers.fakes import FakeApi, FakeGraph

NUMBER = "+15550000001"
ACCOUNT = "AC" + "0" * 32
submit = functools.partial(messages.submit, number=NUMBER, account=ACCOUNT)
"""Store a message from ``NUMBER`` of ``ACCOUNT`` (and hand it to the actor given)."""


def onprem_actor(
    store: Store,
    *,
    rate: float = 1000.0,
    burst: int = 1000,
    max_in_flight: int = 8,
    latency: float = 0.0,
    max_attempts: int = 12,
    on_ambiguous: AmbiguousPolicy = "retry",
    lease: SendLease = ALWAYS_OPEN,
    unrecorded: Unrecorded | None = None,
) -> tuple[NumberActor, FakeApi, TrioWallClock]:
    """An On-Prem actor for ``NUMBER`` against a ``FakeApi`` (logins as admin/pw); ``unrecorded``:
    the outcomes a predecessor left held (a new holder if None)."""
    wall = TrioWallClock(start=1_700_000_000.0)
    api = FakeApi(wall.now, latency=latency)
    tokens = TokenManager(
        number=NUMBER,
        login=lambda: login(api, "admin", "pw", wall),
        store=store,
        wall=wall,
        refresh_before=86_400.0,
    )
    actor = NumberActor(
        number=NUMBER,
        store=store,
        transport=api,
        channel=OnPremChannel(),
        tokens=tokens,
        bucket=TokenBucket(rate, burst),
        wall=wall,
        max_in_flight=max_in_flight,
        policy=DeliveryPolicy(
            max_attempts=max_attempts, backoff_base=0.5, backoff_cap=8.0, on_ambiguous=on_ambiguous
        ),
        lease=lease,
        unrecorded=unrecorded,
    )
    return actor, api, wall


def cloud_actor(
    store: Store,
    *,
    token: Callable[[], str] = lambda: "EAAgood",
    rate: float = 80.0,
    burst: int = 80,
    pair: PairLimiter | None = None,
    limit: int | None = None,
    wall: TrioWallClock | None = None,
    window: int = DEFAULT_WINDOW,
) -> tuple[NumberActor, FakeGraph]:
    """A Cloud actor for ``NUMBER`` against a ``FakeGraph``; ``limit`` is its tier (None: unlimited),
    ``window`` the pending messages it holds in memory."""
    wall = wall or TrioWallClock(start=1_700_000_000.0)
    api = FakeGraph()
    actor = NumberActor(
        number=NUMBER,
        store=store,
        transport=api,
        channel=CloudChannel(PNID, "v23.0"),
        tokens=BearerCredentials(token, recheck=5.0),
        bucket=TokenBucket(rate, burst),
        wall=wall,
        max_in_flight=8,
        pair=pair,
        budget=TierBudget(store, NUMBER, limit),
        window=window,
    )
    return actor, api
