"""Build a configured number's actor and the parts it owns (credentials, bucket, channel, limits).

One ``build_actor`` for both channels: what differs between On-Prem and Cloud (the wire
format, the credentials, the bucket's headroom, Meta's pair rate and tier) comes from one
function per channel as ``ChannelParts``; everything else is built once, the same way.
"""

from __future__ import annotations

import base64
import zlib

import attrs

from actors.channel import Channel, Credentials
from actors.credentials.bearer import BearerCredentials
from actors.credentials.token import TokenManager, login
from actors.lease import ALWAYS_OPEN, SendLease
from actors.number import NumberActor
from actors.pacing.pairrate import PairLimiter
from actors.pacing.ratelimit import TokenBucket
from actors.pacing.tier import TierBudget
from actors.policy import DeliveryPolicy
from actors.template_gate import TemplateGate
from actors.transport import Transport
from actors.unrecorded import Unrecorded
from dispatcher.channels.cloud import CloudChannel, bucket_headroom
from dispatcher.channels.onprem import OnPremChannel
from dispatcher.channels.spec_channel import SpecChannel
from dispatcher.channels.spec_login import spec_login
from dispatcher.config import NumberConfig, Secret
from dispatcher.core import number_watch
from dispatcher.core.channelspec import template
from dispatcher.core.channelspec.load import LoadedSpec
from dispatcher.core.channelspec.model import Auth
from dispatcher.core.clock import WallClock
from dispatcher.core.store import Store
from dispatcher.webhooks.account import Pace, apply_to_actor


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
    spec: LoadedSpec | None = None,
    status_url: str | None = None,
    templates: TemplateGate | None = None,
    lease: SendLease = ALWAYS_OPEN,
) -> NumberActor:
    """The actor for ``num`` sending through ``transport`` (the number's endpoint).

    ``unrecorded``: the number's outcomes not yet committed, handed from actor to actor.
    ``spec``: the channel spec of a number whose ``channel`` is a spec kind; ``status_url``:
    where its webhooks come in (what its sends may name as their callback).
    ``templates``: what is known of the templates its queued messages go out as.
    ``lease``: the send gate of the bucket's ownership (``actors.lease``).
    """
    if num.channel == "cloud":
        parts = cloud_parts(num, store)
    elif num.channel == "onprem":
        parts = onprem_parts(num, transport, store=store, wall=wall)
    else:
        assert spec is not None and spec.kind == num.channel, "a spec kind's number needs its spec"
        parts = spec_parts(num, spec, transport, store=store, wall=wall, status_url=status_url)
    actor = NumberActor(
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
        templates=templates,
        window=num.outbox_window,
        lease=lease,
    )
    if num.cloud is not None:
        # What Meta said last (a raised tier, an upgraded throughput, a watch pause) outlives restarts.
        watch = number_watch.load(store, num.number)
        apply_to_actor(actor, watch, cloud_pace(num))
        if watch.paused_by_watch:
            actor.pause()
    return actor


def cloud_pace(num: NumberConfig) -> Pace:
    """A Cloud number's pace at Meta's standard and upgraded throughput levels."""
    cloud = num.cloud
    assert cloud is not None
    scale = cloud.throughput_upgraded / cloud.throughput
    return Pace(
        rate=cloud.throughput,
        burst=cloud.throughput_burst,
        upgraded_rate=cloud.throughput_upgraded,
        upgraded_burst=max(1, round(cloud.throughput_burst * scale)),
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


def spec_settings(num: NumberConfig, loaded: LoadedSpec) -> dict[str, str]:
    """The number's values of its spec's settings, secrets resolved, defaults filled in."""
    out: dict[str, str] = {}
    for key, setting in loaded.spec.settings.items():
        value = num.settings.get(key)
        if isinstance(value, Secret):
            out[key] = value.resolve(f"{num.number}.settings.{key}")
        elif value is not None:
            out[key] = value
        elif setting.default is not None:
            out[key] = setting.default
    return out


def spec_pace(num: NumberConfig, loaded: LoadedSpec) -> tuple[float, int]:
    """A spec number's rate and burst: its own ``rate``/``burst`` where given, else its kind's limits."""
    defaults = NumberConfig(number=num.number, account=num.account)
    limits = loaded.spec.limits
    rate = num.rate if num.rate != defaults.rate else limits.rate
    burst = num.burst if num.burst != defaults.burst else limits.burst
    return rate, burst


def spec_parts(
    num: NumberConfig,
    loaded: LoadedSpec,
    transport: Transport,
    *,
    store: Store,
    wall: WallClock,
    status_url: str | None,
) -> ChannelParts:
    """A spec channel: its compiled requests, its credentials (static or a renewed login), its limits."""
    spec = loaded.spec
    settings = spec_settings(num, loaded)
    constants: dict[str, object] = {f"setting.{k}": v for k, v in settings.items()}
    auth = spec.auth
    login = auth.login
    tokens: Credentials
    if login is not None:
        tokens = TokenManager(
            number=num.number,
            login=lambda: spec_login(transport, login, constants, wall),
            store=store,
            wall=wall,
            refresh_before=min(num.token_refresh_before, login.default_ttl / 4),
            spread=refresh_spread(num.number),
        )
    else:
        tokens = static_credentials(auth, constants)
    limits = spec.limits
    rate, burst = spec_pace(num, loaded)
    channel = SpecChannel(
        loaded,
        settings=settings,
        number=num.number,
        status_url=status_url,
        wall=wall,
        login=login is not None,
    )
    return ChannelParts(
        channel,
        tokens,
        TokenBucket(rate, burst),
        pair=PairLimiter(limits.pair_interval, limits.pair_burst) if limits.pair_interval > 0 else None,
    )


def static_credentials(auth: Auth, constants: dict[str, object]) -> BearerCredentials:
    """Credentials that never renew (basic, a static bearer token or API key; none, query
    and HMAC put theirs elsewhere): a refusal stops the number until the setting changes."""

    def fill(text: str | None) -> str:
        return "" if text is None else str(template.compile_text(text, constants)({}))

    if auth.type == "basic":
        pair = f"{fill(auth.username)}:{fill(auth.password)}".encode()
        return BearerCredentials(lambda: base64.b64encode(pair).decode(), scheme=b"Basic ")
    if auth.type == "bearer":
        return BearerCredentials(lambda: fill(auth.token))
    if auth.type == "header":
        return BearerCredentials(lambda: fill(auth.value), scheme=b"")
    return BearerCredentials(lambda: "", scheme=b"")
