"""Build a configured number's actor and the parts it owns (credentials, bucket, channel, limits)."""

from __future__ import annotations

import zlib

from actors.credentials.bearer import BearerCredentials
from actors.credentials.token import TokenManager, login
from actors.number import NumberActor
from actors.pacing.pairrate import PairLimiter
from actors.pacing.ratelimit import TokenBucket
from actors.pacing.tier import TierBudget
from actors.transport import Transport
from actors.unrecorded import Unrecorded
from dispatcher.channels.cloud import CloudChannel, bucket_headroom
from dispatcher.channels.onprem import OnPremChannel
from dispatcher.config import NumberConfig
from dispatcher.core.clock import WallClock
from dispatcher.core.store import Store


def refresh_spread(number: str) -> float:
    """The number's share in [0, 1) of the token refresh stretch (``TokenManager._set``): a hash
    of the number, so the spread between numbers holds across refreshes and restarts."""
    return zlib.crc32(number.encode()) / 2**32


def build_actor(
    num: NumberConfig,
    transport: Transport,
    *,
    store: Store,
    wall: WallClock,
    unrecorded: Unrecorded | None = None,
) -> NumberActor:
    """The actor for ``num`` sending through ``transport`` (the number's endpoint).

    ``unrecorded``: the number's outcomes not yet committed, handed from actor to actor.
    """
    if num.channel == "cloud":
        return build_cloud_actor(num, transport, store=store, wall=wall, unrecorded=unrecorded)
    assert num.password is not None  # config.validate() requires it
    password = num.password.resolve("password")
    tokens = TokenManager(
        number=num.number,
        login=lambda: login(transport, num.username, password, wall),
        store=store,
        wall=wall,
        refresh_before=num.token_refresh_before,
        spread=refresh_spread(num.number),
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
        unrecorded=unrecorded,
    )


def build_cloud_actor(
    num: NumberConfig,
    transport: Transport,
    *,
    store: Store,
    wall: WallClock,
    unrecorded: Unrecorded | None = None,
) -> NumberActor:
    """A Cloud API number: static bearer token and Meta's three limits enforced before sending."""
    cloud = num.cloud
    assert cloud is not None  # config.validate() requires it
    where = f"{num.number}.cloud.access_token"
    limit = None if cloud.messaging_limit == "unlimited" else cloud.messaging_limit
    return NumberActor(
        number=num.number,
        store=store,
        transport=transport,
        channel=CloudChannel(cloud.phone_number_id, cloud.api_version),
        tokens=BearerCredentials(lambda: cloud.access_token.resolve(where), recheck=cloud.token_recheck),
        bucket=TokenBucket(
            cloud.throughput, cloud.throughput_burst, headroom=bucket_headroom(cloud.throughput)
        ),
        wall=wall,
        max_in_flight=num.max_in_flight,
        backoff_base=num.backoff_base,
        backoff_cap=num.backoff_cap,
        max_attempts=num.max_attempts,
        on_ambiguous=num.on_ambiguous,
        pair=PairLimiter(cloud.pair_interval, cloud.pair_burst) if cloud.pair_interval > 0 else None,
        budget=TierBudget(store, num.number, limit),
        unrecorded=unrecorded,
    )
