"""Build a configured number's actor and the parts it owns (token manager, bucket)."""

from __future__ import annotations

from actors.number import NumberActor
from actors.ratelimit import TokenBucket
from actors.token import TokenManager, login
from actors.transport import Transport
from dispatcher.channels.onprem import OnPremChannel
from dispatcher.clock import WallClock
from dispatcher.config import NumberConfig
from dispatcher.store import Store


def build_actor(num: NumberConfig, transport: Transport, *, store: Store, wall: WallClock) -> NumberActor:
    """The actor for ``num`` sending through ``transport`` (the number's endpoint)."""
    assert num.password is not None  # config.validate() requires it
    password = num.password.resolve("password")
    tokens = TokenManager(
        number=num.number,
        login=lambda: login(transport, num.username, password, wall),
        store=store,
        wall=wall,
        refresh_before=num.token_refresh_before,
    )
    return NumberActor(
        number=num.number,
        store=store,
        transport=transport,
        channel=OnPremChannel(),
        tokens=tokens,
        bucket=TokenBucket(num.rate, num.burst),
        wall=wall,
        max_in_flight=num.max_in_flight,
        backoff_base=num.backoff_base,
        backoff_cap=num.backoff_cap,
        max_attempts=num.max_attempts,
        on_ambiguous=num.on_ambiguous,
    )
