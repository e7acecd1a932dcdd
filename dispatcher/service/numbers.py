"""Build a configured number's actor and the parts it owns (credentials, bucket, channel, limits).

One ``build_actor`` for both channels: what differs between On-Prem and Cloud (the wire
format, the credentials, the bucket's headroom, Meta's pair rate and tier) comes from one
function per channel as ``ChannelParts``; everything else is built once, the same way.
"""

from __future__ import annotations

import zlib

import attrs

from actors.channel import Channel, Credentials
from actors.credentials.bearer import BearerCredentials
from actors.credentials.token import TokenManager, login
from actors.number import NumberActor
from actors.pacing.pairrate import PairLimiter
from actors.pacing.ratelimit import TokenBucket
from actors.pacing.tier import TierBudget
from actors.policy import DeliveryPolicy
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


@attrs.frozen
class ChannelParts:
    """What a number's channel kind decides of its actor."""

    channel: Channel
    tokens: Credentials
    bucket: TokenBucket
    pair: PairLimiter | None = None  # Meta's per-recipient rate (Cloud)
    budget: TierBudget | None = None  # Meta's messaging tier (Cloud)


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
        parts = cloud_parts(num, store)
    else:
        parts = onprem_parts(num, transport, store=store, wall=wall)
    return NumberActor(
        number=num.number,
        store=store,
        transport=transport,
        channel=parts.channel,
        tokens=parts.tokens,
        bucket=parts.bucket,
        wall=wall,
        max_in_flight=num.max_in_flight,
        policy=DeliveryPolicy(
            max_attempts=num.max_attempts,
            backoff_base=num.backoff_base,
            backoff_cap=num.backoff_cap,
            on_ambiguous=num.on_ambiguous,
        ),
        pair=parts.pair,
        budget=parts.budget,
        unrecorded=unrecorded,
    )


def onprem_parts(num: NumberConfig, transport: Transport, *, store: Store, wall: WallClock) -> ChannelParts:
    """On-Prem: a login token renewed before it expires (kept in the store across restarts)."""
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
    return ChannelParts(OnPremChannel(), tokens, TokenBucket(num.rate, num.burst))


def cloud_parts(num: NumberConfig, store: Store) -> ChannelParts:
    """The Cloud API: a static bearer token, and Meta's three limits enforced before sending."""
    cloud = num.cloud
    assert cloud is not None  # config.validate() requires it
    where = f"{num.number}.cloud.access_token"
    limit = None if cloud.messaging_limit == "unlimited" else cloud.messaging_limit
    return ChannelParts(
        CloudChannel(cloud.phone_number_id, cloud.api_version),
        BearerCredentials(lambda: cloud.access_token.resolve(where), recheck=cloud.token_recheck),
        TokenBucket(cloud.throughput, cloud.throughput_burst, headroom=bucket_headroom(cloud.throughput)),
        pair=PairLimiter(cloud.pair_interval, cloud.pair_burst) if cloud.pair_interval > 0 else None,
        budget=TierBudget(store, num.number, limit),
    )
