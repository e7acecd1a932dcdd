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

from actors.multiconnect import MultiEndpoint
from actors.number import NumberActor
from actors.transport import Transport
from actors.unrecorded import Unrecorded
from dispatcher.config import Config, NumberConfig, cloud_base_url
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import CloudHook, NumberInfo
from dispatcher.core.store import Store
from dispatcher.service.numbers import build_actor

log = structlog.get_logger()

TransportFactory = Callable[[NumberConfig, str], Transport]


def gateway_accounts(config: Config) -> dict[str, str]:
    """Account sid -> auth token."""
    return {a.sid: a.auth_token.resolve("auth_token") for a in config.accounts}


def number_info(num: NumberConfig) -> NumberInfo:
    return NumberInfo(
        number=num.number,
        account_sid=num.account,
        webhook_secret=num.webhook_secret.resolve("webhook_secret") if num.webhook_secret else "",
        status_callback=num.status_callback,
        inbound_url=num.inbound_url,
        webhook_auth=num.webhook_auth,
        webhook_header=num.webhook_header,
        enforce_window=num.enforce_window if num.enforce_window is not None else not num.simulated,
        cloud=cloud_hook(num),
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
        store: Store,
        wall: WallClock,
        make_transport: TransportFactory,
        simulator_url: str | None = None,
    ) -> None:
        """``simulator_url``: the embedded simulator's, where the simulated numbers send."""
        self._store = store
        self._wall = wall
        self._make_transport = make_transport
        self._simulator_url = simulator_url
        self._transports: dict[int, Transport] = {}  # id(actor) -> the transport it sends through
        # Number -> its outcomes not yet committed, shared by the number's successive actors.
        # Kept for every number ever built (a small object): a successor built before its
        # predecessor is released must find the same one.
        self._unrecorded: dict[str, Unrecorded] = {}

    def build(self, num: NumberConfig) -> NumberActor:
        """A new actor for ``num`` with a new transport to its endpoint (not started)."""
        urls = self._base_urls(num)
        transport: Transport
        if len(urls) == 1:
            transport = self._make_transport(num, urls[0])
        else:  # multiconnect: least-outstanding choice, failover, health checks
            transport = MultiEndpoint([(url, self._make_transport(num, url)) for url in urls])
        unrecorded = self._unrecorded.setdefault(num.number, Unrecorded())
        actor = build_actor(num, transport, store=self._store, wall=self._wall, unrecorded=unrecorded)
        self._transports[id(actor)] = transport
        return actor

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
        return list(num.endpoints)
