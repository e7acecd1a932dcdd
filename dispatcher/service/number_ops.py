"""The number side of the daemon, wired: onboarding, the account watch, the doctor, the start-up check.

- ``Roster`` says which numbers run: the config's and the onboarded ones (records in LMDB whose
  ``start`` step is done, in a WABA the config still has with its secrets);
- onboarding starts a number's actor without a restart (``activate``: roster, directory,
  supervisor) and stops it (``deactivate``: the actor drains like a number removed by a reload);
  with ``[cluster]`` the other daemons are told (``roster_share``) and do the same for what
  they learn (``sync``): their front doors know the number, its bucket's owner runs it; a
  bucket's new owner tells them of its numbers they lack (``announce``);
- the account watch gets the four account webhook fields from the Cloud webhook route;
- at start, each Cloud number's fields are read once (tier, throughput, quality, into the
  watch) and the Graph version that answered is checked (``GraphHealth``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import final

import httpx
import structlog
import trio

from actors.supervisor import Supervisor
from dispatcher.channels import account_webhook
from dispatcher.channels.cloud_webhook import FieldChange
from dispatcher.channels.graph import GraphClient
from dispatcher.config import (
    CloudConfig,
    Config,
    NumberConfig,
    Secret,
    WabaConfig,
    cloud_base_url,
    waba_base_url,
)
from dispatcher.core import number_watch
from dispatcher.core import onboarding_state as state
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import WallClock
from dispatcher.core.directory import Directory, NumberInfo
from dispatcher.core.number_watch import NumberWatch
from dispatcher.core.onboarding_state import OnboardRecord
from dispatcher.core.store import Store
from dispatcher.ops.doctor import Doctor, OnPremTarget, Target, TemplatesCheck
from dispatcher.ops.graph_health import GraphHealth
from dispatcher.ops.onboarding import ActivationFailed, Onboarding, WabaHandle
from dispatcher.ops.onprem_provisioning import OnPremHandle
from dispatcher.service.fleet import Fleet
from dispatcher.service.numbers import cloud_pace
from dispatcher.service.reload import retire
from dispatcher.service.roster import Roster
from dispatcher.service.roster_share import SharedRoster
from dispatcher.webhooks.account import AccountWatch, apply_to_actor
from dispatcher.webhooks.cloud_fields import CloudFields

log = structlog.get_logger()


def onboarded_config(
    record: OnboardRecord, waba: WabaConfig, simulator_url: str | None
) -> NumberConfig | None:
    """The running config of an onboarded number: its WABA's token, secrets and Graph version.
    None if the WABA lacks the secrets (or its simulator is not running)."""
    if waba.app_secret is None or waba.verify_token is None or record.phone_number_id is None:
        return None
    if waba.simulated and simulator_url is None:
        return None
    endpoint = simulator_url if waba.simulated else waba_base_url(waba)
    return NumberConfig(
        number=record.number,
        account=record.account,
        channel="cloud",
        endpoints=[endpoint] if endpoint else [],
        waba=waba.id,
        cloud=CloudConfig(
            phone_number_id=record.phone_number_id,
            access_token=waba.access_token,
            app_secret=waba.app_secret,
            verify_token=waba.verify_token,
            api_version=waba.graph_version,
        ),
    )


def onboarded_numbers(config: Config, buckets: Buckets, simulator_url: str | None) -> list[NumberConfig]:
    """The onboarded numbers to run at start (their ``start`` step done)."""
    started = (r for store in buckets.stores for r in state.every(store) if r.is_done(state.START))
    return [num for _, num in runnable(config, started, simulator_url)]


def runnable(
    config: Config, records: Iterable[OnboardRecord], simulator_url: str | None
) -> Iterator[tuple[OnboardRecord, NumberConfig]]:
    """Each started record with its running config; one whose WABA cannot run it is logged and left out."""
    wabas = {w.id: w for w in config.wabas}
    for record in records:
        waba = wabas.get(record.waba_id)
        num = None if waba is None else onboarded_config(record, waba, simulator_url)
        if num is None:
            log.error(
                "onboarding.not_started",
                number=record.number,
                waba=record.waba_id,
                reason="its WABA is not in [[wabas]] with app_secret and verify_token",
            )
            continue
        yield record, num


def graph_of(
    base_url: str, version: str, token: Secret, where: str, client: httpx.AsyncClient
) -> GraphClient:
    """A cold-path Graph client; the token is read per call (a rotated credential file counts)."""
    return GraphClient(client=client, base_url=base_url, version=version, token=lambda: token.resolve(where))


@final
class NumberOps:
    """Onboarding, the account watch and the Graph checks of one daemon, built together."""

    def __init__(
        self,
        *,
        roster: Roster,
        buckets: Buckets,
        wall: WallClock,
        supervisor: Supervisor,
        fleet: Fleet,
        directory: Directory,
        client: httpx.AsyncClient,
        webhook_base: Callable[[], str],
        simulator_url: str | None,
        drain_timeout: float,
        templates: TemplatesCheck | None = None,
        share: SharedRoster | None = None,
    ) -> None:
        """``client``: the cold-path HTTP client for Graph; ``webhook_base``: this daemon's public URL;
        ``templates``: the doctor's check of a WABA's template sync; ``share``: how the other
        daemons of a cluster learn of the numbers started or stopped here."""
        self.roster = roster
        self._share = share
        self._changing = trio.Lock()  # one roster change at a time: onboarding's, or a sync's
        self._buckets = buckets
        self._wall = wall
        self._supervisor = supervisor
        self._fleet = fleet
        self._directory = directory
        self._client = client
        self._webhook_base = webhook_base
        self._simulator_url = simulator_url
        self._drain_timeout = drain_timeout
        config = roster.config
        self.watch = AccountWatch(
            buckets=buckets,
            wall=wall,
            numbers=roster.watched,
            actor=supervisor.actor,
            pause_on=config.watch.pause_on,
        )
        self.graph_health = GraphHealth(wall=wall, warn_days=config.watch.version_warn_days)
        self.doctor = Doctor(
            targets=self.targets,
            onprem=self.onprem_targets,
            client=client,
            wall=wall,
            health=self.graph_health,
            templates=templates,
        )
        self.onboarding = Onboarding(
            buckets=buckets,
            wall=wall,
            waba=self.waba,
            webhook_url=self.webhook_url,
            activate=self.activate,
            deactivate=self.deactivate,
            apply_watch=self.apply_watch,
            onprem=self.onprem,
        )

    # -- wiring -------------------------------------------------------------------------

    def register_fields(self, fields: CloudFields) -> None:
        """The four account fields of the Cloud webhook go to the watch."""

        async def apply(info: NumberInfo, change: FieldChange) -> None:
            await self.watch.apply(info.number, change.waba_id, change.field, bytes(change.value))

        for field in account_webhook.FIELDS:
            fields.register(field, apply)

    def targets(self) -> list[Target]:
        """The running Cloud numbers, as the doctor examines them."""
        found: list[Target] = []
        for num in self.roster.numbers():
            cloud = num.cloud
            if cloud is None:
                continue
            where = f"{num.number}.cloud"
            found.append(
                Target(
                    number=num.number,
                    phone_number_id=cloud.phone_number_id,
                    waba_id=num.waba,
                    graph=self.graph_for(num),
                    token=functools.partial(cloud.access_token.resolve, f"{where}.access_token"),
                    verify_token=functools.partial(cloud.verify_token.resolve, f"{where}.verify_token"),
                    webhook_url=self.webhook_url(num.number),
                    pin_required=not num.simulated,
                )
            )
        return found

    def onprem_targets(self) -> list[OnPremTarget]:
        """The running On-Prem numbers, as the doctor examines them."""
        found = (self.onprem(n.number) for n in self.roster.numbers() if n.channel == "onprem")
        return [OnPremTarget(handle) for handle in found if handle is not None]

    def onprem(self, number: str) -> OnPremHandle | None:
        """A configured On-Prem number's webapp, through its running actor (its login token)."""
        num = self.roster.get(number)
        actor = self._supervisor.actor(number)
        if num is None or num.channel != "onprem" or actor is None:
            return None
        info = self._fleet.info(num)
        digits = number.lstrip("+")
        path = f"{digits}/{info.webhook_secret}" if num.webhook_auth == "path" else digits
        url = f"{self._webhook_base().rstrip('/')}/webhooks/onprem/{path}"
        return OnPremHandle(number=number, account=num.account, call=actor.api_call, webhook_url=url)

    def waba(self, waba_id: str) -> WabaHandle | None:
        waba = next((w for w in self.roster.config.wabas if w.id == waba_id), None)
        if waba is None or waba.verify_token is None:
            return None
        verify = waba.verify_token
        return WabaHandle(
            id=waba.id,
            account=waba.account,
            graph=self.graph_for_waba(waba),
            verify_token=lambda: verify.resolve(f"wabas.{waba_id}.verify_token"),
        )

    def graph_for_waba(self, waba: WabaConfig) -> GraphClient:
        """With the WABA's token and version."""
        base = self._simulator_url if waba.simulated and self._simulator_url else waba_base_url(waba)
        where = f"wabas.{waba.id}.access_token"
        return graph_of(base, waba.graph_version, waba.access_token, where, self._client)

    def graph_for(self, num: NumberConfig) -> GraphClient:
        """With a Cloud number's own token and version."""
        cloud = num.cloud
        assert cloud is not None
        base = self._simulator_url if num.simulated and self._simulator_url else cloud_base_url(num)
        where = f"{num.number}.cloud.access_token"
        return graph_of(base, cloud.api_version, cloud.access_token, where, self._client)

    def webhook_url(self, number: str) -> str:
        return f"{self._webhook_base().rstrip('/')}/webhooks/cloud/{number.lstrip('+')}"

    async def apply_watch(self, number: str, watch: NumberWatch) -> None:
        """Keep what Meta says of ``number`` and apply it to its running actor."""
        await self._buckets.for_number(number).write(number_watch.put(number, watch))
        actor = self._supervisor.actor(number)
        num = self.roster.get(number)
        if actor is not None and num is not None and num.cloud is not None:
            apply_to_actor(actor, watch, cloud_pace(num))

    # -- starting and stopping onboarded numbers -----------------------------------------

    async def activate(self, record: OnboardRecord) -> str:
        """Onboarding's ``start`` step: run the number here (if its bucket is ours), then tell the
        cluster (``ActivationFailed`` if it cannot be told: the step fails and can be run again)."""
        async with self._changing:
            done = await self._start(record)
            if self._share is not None and not self.roster.configured(record.number):
                try:
                    await self._share.publish(record)
                except Exception as exc:
                    raise ActivationFailed(
                        f"the other daemons could not be told of the number ({exc}); run register again"
                    ) from exc
            return done

    async def deactivate(self, number: str) -> str:
        """Onboarding's removal: stop the number here, then tell the cluster."""
        async with self._changing:
            done = await self._stop(number)
            if self._share is not None and not self.roster.configured(number):
                try:
                    await self._share.withdraw(number)
                except Exception as exc:
                    raise ActivationFailed(
                        f"stopped here, but the other daemons could not be told ({exc}); remove it again"
                    ) from exc
            return done

    async def sync(self, records: Sequence[OnboardRecord]) -> None:
        """The cluster's started numbers (``SharedRoster.run``): start or change here what differs,
        stop what is no longer among them. A number that cannot run here is logged, never fatal."""
        async with self._changing:
            current = {n.number: n for n in self.roster.onboarded()}
            wanted: set[str] = set()
            for record, num in runnable(self.roster.config, records, self._simulator_url):
                wanted.add(record.number)
                if current.get(record.number) == num:
                    continue
                try:
                    done = await self._start(record)
                except Exception as exc:
                    log.error("roster.start_failed", number=record.number, error=str(exc)[:300])
                    continue
                log.info("roster.learned", number=record.number, outcome=done)
            for number in current.keys() - wanted:
                log.info("roster.forgotten", number=number, outcome=await self._stop(number))

    async def announce(self, store: Store) -> None:
        """A bucket gained (``store``): its started numbers the cluster's roster lacks are published
        (onboarded before the roster was shared, or their publication failed); failures are logged,
        the bucket is served all the same."""
        if self._share is None:
            return
        known = {n.number for n in self.roster.onboarded()}
        for record in state.every(store):
            if (
                not record.is_done(state.START)
                or record.number in known
                or self.roster.configured(record.number)
            ):
                continue
            try:
                await self._share.publish(record)
            except Exception as exc:
                log.warning("roster.announce_failed", number=record.number, error=str(exc)[:300])

    async def _start(self, record: OnboardRecord) -> str:
        if self.roster.configured(record.number):
            return "runs from the config file ([[numbers]]): nothing to start"
        waba = next((w for w in self.roster.config.wabas if w.id == record.waba_id), None)
        num = None if waba is None else onboarded_config(record, waba, self._simulator_url)
        if num is None:
            raise ActivationFailed(
                f"WABA {record.waba_id} is not in [[wabas]] with app_secret and verify_token"
            )
        running = self._supervisor.actor(record.number)
        previous = self.roster.get(record.number)
        self.roster.add_onboarded(num)
        self._directory.reload(self._fleet.info(n) for n in self.roster.numbers())
        if running is not None and previous == num:
            return "its actor already runs"
        if not self._fleet.runs_here(record.number):
            return "its bucket's owner starts its actor"  # [cluster]: another process owns the bucket
        actor = self._fleet.build(num)
        if running is None:
            await self._supervisor.add(actor)
        else:
            await self._supervisor.replace(actor, timeout=self._drain_timeout)
            await self._fleet.release(running)
        log.info("onboarding.started", number=record.number, waba=record.waba_id)
        return "its actor started: it sends from now on"

    async def _stop(self, number: str) -> str:
        if self.roster.configured(number):
            return "runs from the config file: remove it from [[numbers]] and reload to stop it"
        if self.roster.remove_onboarded(number) is None:
            return "it was not running"
        self._directory.reload(self._fleet.info(n) for n in self.roster.numbers())
        if self._supervisor.actor(number) is None:
            return "it was not running"
        left = await retire(self._supervisor, self._fleet, number, timeout=self._drain_timeout)
        log.info("onboarding.stopped", number=number, outbox=left)
        return f"its actor stopped ({left} messages left in its outbox, kept in LMDB)"

    # -- the start-up check ----------------------------------------------------------------

    async def check_numbers(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read each Cloud number's fields once (into the watch) and judge the Graph version that
        answered; failures are logged (the daemon runs without it)."""
        task_status.started()
        for num in self.roster.numbers():
            if num.cloud is None:
                continue
            graph = self.graph_for(num)
            try:
                fields = await self.graph_health.fields(graph, num.cloud.phone_number_id)
            except Exception as exc:
                log.warning("graph.check_failed", number=num.number, error=str(exc)[:300])
                continue
            store = self._buckets.for_number(num.number)
            watch = fields.watched(number_watch.load(store, num.number), self._wall.now())
            await self.apply_watch(num.number, watch)
