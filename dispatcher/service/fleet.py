"""The configured numbers as running parts: transport, actor, directory entry.

Used by the daemon at start and by live reload, so both build a number the
same way. The fleet owns the transports: it closes a number's transport once
the actor using it has stopped, and every remaining one at shutdown. It also
keeps each number's unrecorded outcomes (``actors.unrecorded``), so an actor
that replaces another commits its predecessor's instead of sending them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import structlog

from actors.lease import ALWAYS_OPEN, SendLease
from actors.multiconnect import MultiEndpoint
from actors.number import NumberActor
from actors.template_gate import TemplateGate
from actors.transport import Transport
from actors.unrecorded import Unrecorded
from dispatcher.channels.spec_channel import webhook_key, webhook_path
from dispatcher.config import Config, NumberConfig, cloud_base_url
from dispatcher.core.buckets import Buckets
from dispatcher.core.channelspec.load import LoadedSpec, Registry, load_registry
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import CloudHook, NumberInfo, SpecHook
from dispatcher.service.numbers import build_actor, spec_settings

log = structlog.get_logger()

TransportFactory = Callable[[NumberConfig, str], Transport]


def gateway_accounts(config: Config) -> dict[str, str]:
    """Account sid -> auth token."""
    return {a.sid: a.auth_token.resolve("auth_token") for a in config.accounts}


def number_info(num: NumberConfig, channels: Registry | None = None) -> NumberInfo:
    """The directory's entry of ``num``; ``channels``: the specs its kind may be (default: shipped)."""
    spec = spec_hook(num, channels)
    whatsapp = spec is None or spec.prefix == "whatsapp:"
    return NumberInfo(
        number=num.number,
        account_sid=num.account,
        webhook_secret=num.webhook_secret.resolve("webhook_secret") if num.webhook_secret else "",
        status_callback=num.status_callback,
        inbound_url=num.inbound_url,
        webhook_auth=num.webhook_auth,
        webhook_header=num.webhook_header,
        enforce_window=num.enforce_window
        if num.enforce_window is not None
        else whatsapp and not num.simulated,
        cloud=cloud_hook(num),
        window_template=num.window_template,
        window_variable=num.window_variable,
        waba=num.waba,
        spec=spec,
    )


def spec_hook(num: NumberConfig, channels: Registry | None) -> SpecHook | None:
    """A spec kind's number: its webhook secret and its addresses (None for On-Prem and Cloud)."""
    if num.channel in ("onprem", "cloud"):
        return None
    loaded = (channels if channels is not None else load_registry()).get(num.channel)
    assert loaded is not None, f"config.validate() checks that {num.channel} is a known kind"
    return SpecHook(
        kind=loaded.kind,
        key=webhook_key(loaded, spec_settings(num, loaded)),
        prefix=loaded.spec.prefix,
        recipient=loaded.recipient,
    )


def cloud_hook(num: NumberConfig) -> CloudHook | None:
    if num.cloud is None:
        return None
    where = f"{num.number}.cloud"
    return CloudHook(
        phone_number_id=num.cloud.phone_number_id,
        app_secret=num.cloud.app_secret.resolve(f"{where}.app_secret"),
        verify_token=num.cloud.verify_token.resolve(f"{where}.verify_token"),
    )


@final
class Fleet:
    def __init__(
        self,
        *,
        buckets: Buckets,
        wall: WallClock,
        make_transport: TransportFactory,
        simulator_url: str | None = None,
        channels: Registry | None = None,
        public_url: str | None = None,
        templates: TemplateGate | None = None,
    ) -> None:
        """``simulator_url``: the embedded simulator's, where the simulated numbers send;
        ``channels``: the channel specs numbers may name (default: the shipped ones);
        ``public_url``: where the channels reach our webhooks (``server.public_url``);
        ``templates``: the template gate every actor asks before a template send."""
        self._channels = channels if channels is not None else load_registry()
        self._public_url = public_url
        self._buckets = buckets
        self._templates = templates
        self._wall = wall
        self._make_transport = make_transport
        self._simulator_url = simulator_url
        self._transports: dict[int, Transport] = {}  # id(actor) -> the transport it sends through
        # Number -> its outcomes not yet committed, shared by the number's successive actors.
        # Kept for every number ever built (a small object): a successor built before its
        # predecessor is released must find the same one.
        self._unrecorded: dict[str, Unrecorded] = {}
        # Bucket -> the send gate of its ownership (absent: always open, one daemon owns everything).
        self._gates: dict[int, SendLease] = {}

    def open_bucket(self, bucket: int, gate: SendLease) -> None:
        """Actors built for ``bucket`` from now on send behind ``gate`` (its owner's lease)."""
        self._gates[bucket] = gate

    def close_bucket(self, bucket: int) -> None:
        self._gates.pop(bucket, None)

    def runs_here(self, number: str) -> bool:
        """``number``'s bucket is served by this process: its actor runs here."""
        return self._buckets.is_local(self._buckets.index(number))

    def build(self, num: NumberConfig) -> NumberActor:
        """A new actor for ``num`` with a new transport to its endpoint (not started)."""
        urls = self._base_urls(num)
        transport: Transport
        if len(urls) == 1:
            transport = self._make_transport(num, urls[0])
        else:  # multiconnect: least-outstanding choice, failover, health checks
            transport = MultiEndpoint([(url, self._make_transport(num, url)) for url in urls])
        unrecorded = self._unrecorded.setdefault(num.number, Unrecorded())
        spec = self.spec_of(num)
        actor = build_actor(
            num,
            transport,
            store=self._buckets.for_number(num.number),  # the actor's bucket: everything of its number
            wall=self._wall,
            unrecorded=unrecorded,
            spec=spec,
            status_url=self._status_url(num, spec),
            templates=self._templates,
            lease=self._gates.get(self._buckets.index(num.number), ALWAYS_OPEN),
        )
        self._transports[id(actor)] = transport
        return actor

    def info(self, num: NumberConfig) -> NumberInfo:
        """The directory's entry of ``num``, its spec kind read from the channel specs in force."""
        return number_info(num, self._channels)

    def spec_of(self, num: NumberConfig) -> LoadedSpec | None:
        """The channel spec of a number of a spec kind (None for On-Prem and Cloud numbers)."""
        if num.channel in ("onprem", "cloud"):
            return None
        spec = self._channels.get(num.channel)
        assert spec is not None, f"config.validate() checks that {num.channel} is a known kind"
        return spec

    def reload_channels(self, channels: Registry) -> None:
        """A live reload's channel specs, for the numbers it builds from now on."""
        self._channels = channels

    def _status_url(self, num: NumberConfig, spec: LoadedSpec | None) -> str | None:
        if spec is None or self._public_url is None:
            return None
        return self._public_url.rstrip("/") + webhook_path(spec, spec_settings(num, spec), num.number)

    async def release(self, actor: NumberActor) -> None:
        """Close the transport of an actor that has stopped for good."""
        transport = self._transports.pop(id(actor), None)
        if transport is not None:
            await transport.aclose()

    async def aclose(self) -> None:
        """Close every transport; log the outcomes that storage never recorded (at shutdown)."""
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()
        for number, unrecorded in self._unrecorded.items():
            if unrecorded:
                # Their outbox entries remain: the next start sends these again (at-least-once).
                log.error(
                    "daemon.outcomes_unrecorded",
                    number=number,
                    count=len(unrecorded),
                    sids=[o.sid for o in unrecorded][:100],
                    effect="sent, but not recorded: sent again after a restart",
                )

    def _base_urls(self, num: NumberConfig) -> list[str]:
        if num.simulated:
            assert self._simulator_url is not None, "a simulated number needs the simulator"
            if num.channel == "cloud":
                return [self._simulator_url]  # the Graph paths carry the version and phone number id
            base = self._simulator_url + "/" + num.number.lstrip("+")
            if num.simulated_endpoints == 1:
                return [base]
            return [f"{base}~{k}" for k in range(num.simulated_endpoints)]
        if num.channel == "cloud":
            return [cloud_base_url(num)]
        if not num.endpoints and (spec := self.spec_of(num)) is not None and spec.spec.base_url:
            return [spec.spec.base_url]
        return list(num.endpoints)
