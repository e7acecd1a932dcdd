"""run_daemon(): the whole gateway in one Trio run, and its orderly shutdown.

Nesting is the shutdown order: the LMDB environments (one per bucket of the
data root) outlive their writers, the writers outlive the actors, the actors
outlive the front door.
On SIGTERM/SIGINT (or ``shutdown.set()``): the front door stops accepting and
finishes its requests, the actors start no new sends and finish those in flight
(bounded by ``drain_timeout``; what is cut off stays in the outbox), the writer
commits what is queued, then LMDB closes. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, final

import attrs
import httpx
import structlog
import trio
from hypercorn.typing import ASGIFramework

from actors.http.pool import H11Pool
from actors.supervisor import Supervisor
from actors.transport import Transport
from dispatcher.channels.graph import GraphClient
from dispatcher.channels.graph_templates import GraphTemplates
from dispatcher.channels.spec_webhook import SpecWebhooks
from dispatcher.config import (
    CallbacksConfig,
    ClusterConfig,
    Config,
    NumberConfig,
    WabaConfig,
    channel_registry,
    parse_listen,
    waba_base_url,
)
from dispatcher.core import dataroot, orphans
from dispatcher.core.buckets import Buckets
from dispatcher.core.clock import SystemWallClock, WallClock
from dispatcher.core.dataroot import DataRoot, open_root
from dispatcher.core.directory import Directory
from dispatcher.core.ssrf import Resolver, UrlGuard
from dispatcher.core.store import Store
from dispatcher.core.template_file import load_file
from dispatcher.frontdoor.admin_templates import WabaTemplates
from dispatcher.frontdoor.app import MAX_REQUEST_BYTES, make_app
from dispatcher.frontdoor.cloud_app import CloudAppWebhook
from dispatcher.frontdoor.cloud_app import add_metrics as add_cloud_app_metrics
from dispatcher.frontdoor.cloud_routes import CloudWebhooks
from dispatcher.frontdoor.cluster_fleet import fleet_asker
from dispatcher.frontdoor.cluster_lists import ClusterLists
from dispatcher.frontdoor.console.routes import ConsoleServices
from dispatcher.frontdoor.errors import LastResort
from dispatcher.frontdoor.fastlane import FastLane
from dispatcher.frontdoor.forwarding import Forwarder, PeerPool, status_asker
from dispatcher.frontdoor.forwarding import add_metrics as add_forwarding_metrics
from dispatcher.frontdoor.hot_routes import HotRoutes
from dispatcher.frontdoor.keepalive import CloseUnreadBody, ShieldFinalSend
from dispatcher.frontdoor.lane_server import serve_lane
from dispatcher.frontdoor.lane_wire import address_of as lane_address
from dispatcher.frontdoor.server import ConnectionCap, listen_socket, serve_frontdoor
from dispatcher.messages import idempotency
from dispatcher.messages.auth import api_keys
from dispatcher.messages.catalog import TemplateCatalog
from dispatcher.messages.content import ContentLibrary
from dispatcher.messages.fallback import Fallbacks, status_listener
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.media_fetch import MediaFetcher
from dispatcher.messages.media_guard import MediaGuard
from dispatcher.messages.scheduler import Scheduler
from dispatcher.messages.services import Services
from dispatcher.messages.template_sync import TemplateSync, WabaSync
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.ops.callback_view import CallbackView
from dispatcher.ops.cluster import ClusterView, SoleOwner
from dispatcher.ops.cluster_fleet import ClusterFleet
from dispatcher.ops.doctor import templates_check
from dispatcher.ops.fleet_view import FleetView, outbox_depth, watched_standing
from dispatcher.ops.message_search import MessageSearch
from dispatcher.ops.metrics import DispatcherCollector, Metrics, RequestCounts
from dispatcher.ops.number_metrics import NumberWatchCollector
from dispatcher.ops.number_view import NumberView
from dispatcher.ops.operations import Operations
from dispatcher.ops.samples import Sampler
from dispatcher.ownership.interface import Ownership
from dispatcher.service.cluster import OwnedBuckets, build_ownership, etcd_http_client, shared_roster
from dispatcher.service.fleet import Fleet, TransportFactory, gateway_accounts, number_info
from dispatcher.service.messaging import build_messaging
from dispatcher.service.number_ops import NumberOps, onboarded_numbers
from dispatcher.service.reload import Reloader
from dispatcher.service.roster import Roster
from dispatcher.service.sdnotify import Notifier, WriterProgress
from dispatcher.webhooks.callback_sender import CallbackSender, SenderSettings
from dispatcher.webhooks.cloud_fields import CloudFields
from dispatcher.webhooks.inbox import Inbox
from dispatcher.webhooks.replies import TwimlReplies

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from dispatcher.service.sandbox import Sandbox
    from dispatcher.simulator.core import Simulator

log = structlog.get_logger()

GRAPH_TIMEOUT = 30.0  # seconds per Graph call of the template sync


@attrs.define(eq=False)
class Running:
    """Handles on a running daemon, for tests and benches: ``started()`` value of run_daemon."""

    url: str
    buckets: Buckets
    store: Store  # bucket 0: the only one of a one-bucket data root
    wall: WallClock
    supervisor: Supervisor
    directory: Directory
    gateway: Gateway
    scheduler: Scheduler
    fallbacks: Fallbacks
    inbox: Inbox
    routes: HotRoutes
    quart_app: QuartTrio  # the front door behind the fast lane
    ops: Operations
    metrics: Metrics
    shutdown: trio.Event
    cloud_fields: CloudFields
    catalog: TemplateCatalog
    template_sync: TemplateSync
    numbers: NumberOps  # onboarding, the account watch, the doctor
    sampler: Sampler | None = None
    ownership: Ownership | None = None  # with [cluster]: who owns which bucket
    simulator: Simulator | None = None
    simulator_url: str | None = None


# Says which gateway process sent a request (host and pid): in WhatsApp's and the simulator's logs,
# two processes sending for one number at once would show (the simulator's per-sender log).
USER_AGENT: Final = f"wadispatch/0.1 ({socket.gethostname()}; pid {os.getpid()})".encode()


def default_transport(num: NumberConfig, base_url: str) -> Transport:
    return H11Pool(
        base_url,
        max_connections=num.max_in_flight,
        request_timeout=num.request_timeout,
        max_response_body=num.max_response_body,
        default_headers=((b"user-agent", USER_AGENT),),
    )


async def _watch_signals(
    shutdown: trio.Event,
    hard_stop: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if not shutdown.is_set():
                log.info("shutdown.requested", signal=signal.Signals(signum).name)
                shutdown.set()
            else:
                log.warning("shutdown.forced", signal=signal.Signals(signum).name)
                hard_stop.cancel()


async def _watch_reload(
    ops: Operations,
    notifier: Notifier,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP: live reload, bracketed by RELOADING=1 / READY=1 for systemd. Ends at shutdown."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async with trio.open_nursery() as nursery:

            async def reload_on_signal() -> None:
                async for _ in signals:
                    log.info("reload.requested", signal="SIGHUP")
                    notifier.reloading()
                    result = await ops.reload()
                    status = "reloaded" if result.ok else f"reload rejected: {result.error}"
                    notifier.notify(ready=1, status=status)

            nursery.start_soon(reload_on_signal)
            await shutdown.wait()
            nursery.cancel_scope.cancel()


def _callback_metrics(collector: DispatcherCollector, buckets: Buckets, sender: CallbackSender) -> None:
    """Customer callbacks on /metrics: the durable queue's depth and what the sender did."""
    collector.add_gauge(
        "wadispatch_callback_queue_depth",
        "Status callbacks and inbound webhooks waiting in LMDB for the customer's endpoint.",
        lambda: sum(store.entries(b"callbacks") for store in buckets.stores),
    )
    for name, doc in (
        ("delivered", "Callbacks the customer's endpoint accepted."),
        ("retried", "Callback attempts that failed and will be retried."),
        ("gave_up", "Callbacks dropped after retrying for callbacks.give_up_after."),
        ("refused", "Callbacks not sent: the URL is private or not allowed (SSRF guard)."),
        ("rejected", "Callbacks the customer's endpoint answered with a permanent error."),
    ):
        collector.add_counter(f"wadispatch_callbacks_{name}", doc, functools.partial(_attr, sender, name))


def _template_metrics(collector: DispatcherCollector, catalog: TemplateCatalog, sync: TemplateSync) -> None:
    """The WABAs' templates on /metrics: what cannot be sent now, and whose sync is failing."""
    collector.add_gauge(
        "wadispatch_templates",
        "Templates of the WABAs known from Meta (deleted ones left out).",
        lambda: sum(1 for t in catalog.templates(sync.wabas()) if t.status != "DELETED"),
    )
    collector.add_gauge(
        "wadispatch_templates_not_sendable",
        "Templates of the WABAs Meta has not approved now (pending, rejected, paused, disabled...).",
        lambda: sum(1 for t in catalog.templates(sync.wabas()) if t.status not in ("APPROVED", "DELETED")),
    )
    collector.add_gauge(
        "wadispatch_template_sync_failing",
        "WABAs whose last template sync failed (the log says Meta's error; the catalog keeps what it knew).",
        lambda: len(sync.failures),
    )


def _field_metrics(collector: DispatcherCollector, fields: CloudFields) -> None:
    collector.add_labelled_counter(
        "wadispatch_webhook_fields_unhandled",
        "Changes of Cloud webhook fields no part of the daemon handles (skipped), by field.",
        "field",
        lambda: fields.unhandled,
    )
    collector.add_labelled_counter(
        "wadispatch_webhook_fields_failed",
        "Changes of Cloud webhook fields whose handler failed (logged), by field.",
        "field",
        lambda: fields.failed,
    )


def _fallback_metrics(collector: DispatcherCollector, buckets: Buckets, fallbacks: Fallbacks) -> None:
    """Fallback messages on /metrics: what waits in the index and what the task did."""
    collector.add_gauge(
        "wadispatch_fallbacks_pending",
        "Messages whose fallback may still fall due (deadlines and triggers in LMDB).",
        lambda: sum(store.entries(b"fallbacks") for store in buckets.stores),
    )
    for name, doc in (
        ("sent", "Fallback messages created and linked to the message they stand in for."),
        ("refused", "Fallbacks the create rules refused (recorded as the message's fallback_error)."),
        ("late", "Messages delivered after their fallback went (recorded, never sent again)."),
    ):
        collector.add_counter(f"wadispatch_fallbacks_{name}", doc, functools.partial(_attr, fallbacks, name))


def _connection_metrics(collector: DispatcherCollector, cap: ConnectionCap) -> None:
    collector.add_gauge(
        "wadispatch_http_connections",
        "Open HTTP connections to the front door (at most [server] max_connections).",
        lambda: cap.open,
    )
    collector.add_counter(
        "wadispatch_http_connections_waited",
        "Connections accepted only after waiting for a free slot under [server] max_connections.",
        lambda: cap.waited,
    )


def _console(
    *,
    buckets: Buckets,
    wall: WallClock,
    supervisor: Supervisor,
    directory: Directory,
    ops: Operations,
    sampler: Sampler,
    sender: CallbackSender,
) -> ConsoleServices:
    """What the operator console reads: views over the same counters and stores the admin API reads."""
    return ConsoleServices(
        fleet=FleetView(
            supervisor=supervisor,
            directory=directory,
            ops=ops,
            buckets=buckets,
            sampler=sampler,
            wall=wall,
            standings=watched_standing(buckets, wall),
        ),
        numbers=NumberView(buckets=buckets, wall=wall),
        search=MessageSearch(
            buckets=buckets,
            accounts=lambda: {info.account_sid for info in directory.snapshot.by_digits.values()},
        ),
        callbacks=CallbackView(buckets=buckets, sender=sender, wall=wall),
        sampler=sampler,
        ops=ops,
    )


async def _sample_until(
    sampler: Sampler, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The console's per-second samples, from the actors' start to the shutdown."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        task_status.started()
        await shutdown.wait()
        nursery.cancel_scope.cancel()


def _attr(obj: object, name: str) -> float:
    return float(getattr(obj, name))


async def _notify_stopping(shutdown: trio.Event, notifier: Notifier) -> None:
    await shutdown.wait()
    notifier.stopping()


def _writer_health(buckets: Buckets, notifier: Notifier) -> WriterProgress:
    """Healthy unless the LMDB writers have queued writes and no commit for half the watchdog period."""
    period = (notifier.watchdog_usec or 0) / 1_000_000
    return WriterProgress(buckets.statistics_sum, stall_after=max(10.0, period / 2))


async def run_daemon(
    config: Config,
    *,
    wall: WallClock | None = None,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    make_transport: TransportFactory = default_transport,
    reload_config: Callable[[], Config] | None = None,
    notifier: Notifier | None = None,
    resolver: Resolver | None = None,
    on_ready: Callable[[], None] | None = None,
    shared_port: bool = False,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until shutdown; ``started()`` once the front door listens and every outbox is recovered.

    ``reload_config`` re-reads the config for a live reload (SIGHUP, ``POST /admin/v1/reload``);
    ``notifier`` speaks sd_notify (default: from ``$NOTIFY_SOCKET``); ``resolver`` resolves
    the host names of customer URLs (callbacks, MediaUrl) for the SSRF guard (default: the system's).
    ``on_ready`` runs once, when ready, before ``started()`` (the CLI settles the GC there: ``runtime``).
    ``shared_port``: the listen port is shared with the other workers of ``--workers`` (SO_REUSEPORT).
    With ``[cluster]``, the daemon owns only the buckets its ownership gives it (``service.cluster``).
    """
    wall = wall or SystemWallClock()
    notifier = notifier or Notifier.from_environ()
    shutdown = shutdown or trio.Event()
    root = open_root(config.store.data_dir, config.store.buckets)
    with dataroot.held(root):
        await _run_on_root(
            config,
            root,
            wall=wall,
            shutdown=shutdown,
            handle_signals=handle_signals,
            make_transport=make_transport,
            reload_config=reload_config,
            notifier=notifier,
            resolver=resolver,
            on_ready=on_ready,
            shared_port=shared_port,
            task_status=task_status,
        )


async def _run_on_root(
    config: Config,
    root: DataRoot,
    *,
    wall: WallClock,
    shutdown: trio.Event,
    handle_signals: bool,
    make_transport: TransportFactory,
    reload_config: Callable[[], Config] | None,
    notifier: Notifier,
    resolver: Resolver | None,
    on_ready: Callable[[], None] | None,
    shared_port: bool,
    task_status: trio.TaskStatus[Running],
) -> None:
    """``run_daemon`` on a data root it holds (shared: a rebucket cannot start under it)."""
    buckets = Buckets.open(
        root,
        map_size=config.store.map_size_mb << 20,
        map_max=(config.store.map_max_mb << 20) or None,
        max_batch=config.store.max_batch,
    )
    store = buckets.home
    # Opened outside the nursery that uses it (closing it under its users fails them); cold path, own pool.
    callback_client = httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=config.callbacks.concurrency),
    )
    # Meta's Graph API, cold path: the WABAs' templates (a sync every few minutes, an operator's
    # submit), number onboarding, the doctor and the start-up check of the Cloud numbers.
    graph_client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=GRAPH_TIMEOUT)
    cluster = config.cluster
    etcd_client = etcd_http_client(cluster) if cluster is not None and cluster.backend == "etcd" else None
    try:
        async with (
            callback_client,
            graph_client,
            etcd_client or contextlib.nullcontext(),
            trio.open_nursery() as root_nursery,
        ):
            if handle_signals:
                await root_nursery.start(_watch_signals, shutdown, root_nursery.cancel_scope)
            root_nursery.start_soon(_notify_stopping, shutdown, notifier)
            listening = ListeningUrl()
            sandbox: Sandbox | None = None
            if config.simulator is not None:
                # Imported only when asked for: a production daemon never loads the simulator.
                from dispatcher.service.sandbox import start_sandbox

                sandbox = await start_sandbox(config.simulator, root_nursery, front_url=listening.get)
                for waba in config.wabas:
                    sandbox.register_waba(waba)  # before the first template sync pulls it
            async with trio.open_nursery() as io:
                for bucket in buckets.stores:
                    await io.start(bucket.run_writer)
                    root_nursery.start_soon(idempotency.sweep_forever, bucket, wall)
                await root_nursery.start(notifier.watchdog, _writer_health(buckets, notifier))

                def templates_sendable() -> None:  # the supervisor below exists by the first call
                    for actor in supervisor.actors():
                        actor.templates_sendable()

                catalog = TemplateCatalog(
                    store,
                    policies={w.id: w.on_paused for w in config.wabas},
                    on_sendable=templates_sendable,
                )
                template_sync = TemplateSync(
                    catalog=catalog,
                    wabas={w.id: _waba_sync(w, graph_client, sandbox) for w in config.wabas},
                    wall=wall,
                )
                channels = channel_registry(config)
                spec_webhooks = SpecWebhooks(channels)
                fleet = Fleet(
                    buckets=buckets,
                    wall=wall,
                    make_transport=make_transport,
                    simulator_url=sandbox.url if sandbox is not None else None,
                    channels=channels,
                    public_url=config.server.public_url,
                    templates=catalog,
                )
                simulator_url = sandbox.url if sandbox is not None else None
                # The config's numbers and those onboarded at runtime (kept in LMDB).
                roster = Roster(config, onboarded_numbers(config, buckets, simulator_url))
                # With ownership, a bucket's actors start when it is gained (OwnedBuckets).
                actors = [] if cluster is not None else [fleet.build(num) for num in roster.numbers()]
                sup = config.supervisor
                supervisor = Supervisor(
                    actors,
                    base_delay=sup.restart_base,
                    max_delay=sup.restart_max,
                    reset_after=sup.stable_after,
                    crash_limit=sup.crash_limit,
                    crash_window=sup.crash_window,
                    degraded_delay=sup.degraded_retry,
                )
                url_guard = UrlGuard(config.callbacks.allow_private, resolver=resolver)
                media_guard = MediaGuard(url_guard)
                messaging = build_messaging(
                    buckets=buckets,
                    wall=wall,
                    supervisor=supervisor,
                    numbers=[number_info(n, channels) for n in roster.numbers()],
                    accounts=gateway_accounts(config),
                    api_keys=api_keys(config),
                    templates=TemplateRegistry(
                        store,
                        load_file(config.messaging.templates_file) if config.messaging.templates_file else (),
                        catalog=catalog,
                    ),
                    services=Services(config.services, buckets),
                    max_body_chars=config.messaging.max_body,
                    media_guard=media_guard,
                )
                directory, auth, handoff = messaging.directory, messaging.auth, messaging.handoff
                # WhatsApp's webhooks and the customer's callbacks.
                replies = TwimlReplies(
                    buckets=buckets,
                    wall=wall,
                    numbers=directory.get,
                    notify=handoff.notify,
                    media_guard=media_guard,
                )
                sender = CallbackSender(
                    buckets=buckets,
                    client=callback_client,
                    auth_token=auth.auth_token,
                    guard=url_guard,
                    wall=wall,
                    settings=sender_settings(config.callbacks),
                    on_reply=replies.reply,
                )
                inbox = Inbox(
                    buckets=buckets,
                    wall=wall,
                    public_url=PublicUrl(config.server.public_url, listening).get,
                    wake_callbacks=sender.wake,
                    on_status=status_listener(handoff, messaging.fallbacks),
                    orphan_limits=orphans.Limits(config.webhooks.orphan_limit, config.webhooks.orphan_ttl),
                )
                # Meta's other webhook fields (template, account updates): one line per handler.
                cloud_fields = CloudFields()
                cloud_fields.register("message_template_status_update", template_sync.on_status_update)
                cloud_fields.register("message_template_quality_update", template_sync.on_quality_update)
                cloud_fields.register("template_category_update", template_sync.on_category_update)
                numbers = NumberOps(
                    roster=roster,
                    buckets=buckets,
                    wall=wall,
                    supervisor=supervisor,
                    fleet=fleet,
                    directory=directory,
                    client=graph_client,
                    webhook_base=PublicUrl(config.server.public_url, listening).get,
                    simulator_url=simulator_url,
                    drain_timeout=config.server.drain_timeout,
                    templates=templates_check(
                        template_sync, catalog, wall, {w.id: w.sync_interval for w in config.wabas}
                    ),
                    share=(roster_share := shared_roster(cluster, buckets, etcd_client)),
                )
                numbers.register_fields(cloud_fields)
                # Operators.
                reloader = (
                    None
                    if reload_config is None
                    else Reloader(
                        load=reload_config,
                        config=config,
                        buckets=buckets,
                        supervisor=supervisor,
                        fleet=fleet,
                        directory=directory,
                        auth=auth,
                        rules=messaging.rules,
                        templates=messaging.templates,
                        sandbox=sandbox,
                        url_guard=url_guard,
                        roster=roster,
                        spec_webhooks=spec_webhooks,
                    )
                )
                ops = Operations(
                    buckets=buckets,
                    supervisor=supervisor,
                    directory=directory,
                    draining=messaging.draining,
                    wall=wall,
                    reload=reloader,
                )
                requests = RequestCounts()
                metrics = Metrics(
                    DispatcherCollector(
                        actors=supervisor.actors,
                        buckets=buckets,
                        requests=requests,
                        restarts=supervisor.restarts,
                    )
                )
                sampler = Sampler(
                    actors=supervisor.actors,
                    outbox_depth=functools.partial(outbox_depth, buckets),
                    wall=wall,
                )
                console = _console(
                    buckets=buckets,
                    wall=wall,
                    supervisor=supervisor,
                    directory=directory,
                    ops=ops,
                    sampler=sampler,
                    sender=sender,
                )
                # The front door.
                routes = HotRoutes(auth=auth, rules=messaging.rules, gateway=messaging.gateway, inbox=inbox)
                admin_token = config.admin.token.resolve("admin.token") if config.admin.token else None
                # Who this daemon is to the others, and how it asks them (the cluster view).
                owner_id = f"{socket.gethostname()}-{os.getpid()}"
                peer_pool = PeerPool()
                # Sharing buckets: ours served here, the others' forwarded to their owner.
                ownership: Ownership | None = None
                peer_socket: socket.socket | None = None
                lane_socket: socket.socket | None = None
                if cluster is not None:
                    peer_host, peer_port = parse_listen(cluster.peer_listen, "cluster.peer_listen")
                    peer_socket = listen_socket(peer_host, peer_port)
                    lane_host, lane_port = (
                        (peer_host, 0)
                        if cluster.lane_listen is None
                        else parse_listen(cluster.lane_listen, "cluster.lane_listen")
                    )
                    lane_socket = listen_socket(lane_host, lane_port)
                    owned = OwnedBuckets(
                        buckets=buckets,
                        fleet=fleet,
                        supervisor=supervisor,
                        numbers=roster.numbers,
                        drain_timeout=config.server.drain_timeout,
                        on_change=functools.partial(_wake_all, sender.wake, messaging.scheduler.wake),
                        announce=numbers.announce,
                    )
                    ownership = build_ownership(
                        cluster,
                        root=root,
                        buckets=buckets,
                        host=owned,
                        address=cluster.advertise_url or _url_of(peer_host, peer_socket),
                        lane=cluster.advertise_lane or lane_address(lane_host, lane_socket.getsockname()[1]),
                        send_timeout=max((n.request_timeout for n in roster.numbers()), default=0.0),
                        etcd_client=etcd_client,
                    )
                    _ownership_metrics(metrics.collector, ownership)
                    owner_id = ownership.owner_id
                    # The console's fleet page: every daemon's numbers.
                    console = attrs.evolve(
                        console,
                        cluster_fleet=ClusterFleet(
                            count=buckets.count,
                            owners=ownership,
                            view=console.fleet,
                            ask=fleet_asker(peer_pool, admin_token, owner_id),
                        ),
                    )
                cloud_hooks = CloudWebhooks(buckets=buckets, wall=wall, inbox=inbox, fields=cloud_fields)
                owners = ownership or SoleOwner(owner_id, listening.get)
                cloud_app = CloudAppWebhook(
                    directory=directory, buckets=buckets, hooks=cloud_hooks, owners=owners, pool=peer_pool
                )
                add_cloud_app_metrics(metrics.collector, cloud_app.statistics)
                quart_app = make_app(
                    buckets=buckets,
                    auth=auth,
                    gateway=messaging.gateway,
                    routes=routes,
                    edits=messaging.edits,
                    templates=messaging.templates,
                    directory=directory,
                    cloud_hooks=cloud_hooks,
                    spec_webhooks=spec_webhooks,
                    public_url=config.server.public_url,
                    handoff=handoff,
                    supervisor=supervisor,
                    ops=ops,
                    admin_token=admin_token,
                    metrics=metrics,
                    requests=requests,
                    protect_metrics=config.admin.protect_metrics,
                    body_timeout=config.server.body_timeout,
                    media=config.media,
                    console=console,
                    wall=wall,
                    numbers=(numbers.onboarding, numbers.doctor),
                    content=ContentLibrary(
                        store=store,
                        catalog=catalog,
                        sync=template_sync,
                        wabas=_wabas_by_account(config),
                        wall=wall,
                        media=MediaFetcher(guard=url_guard, client=graph_client),
                    ),
                    waba_templates=WabaTemplates(catalog=catalog, sync=template_sync),
                    cluster=ClusterView(
                        count=buckets.count,
                        owners=owners,
                        local=ops.status,
                        ask=status_asker(peer_pool, admin_token, owner_id),
                    ),
                    lists=_cluster_lists(cluster, buckets, ownership, peer_pool),
                    cloud_app=cloud_app,
                )
                app: ASGIFramework = CloseUnreadBody(
                    FastLane(
                        LastResort(ShieldFinalSend(quart_app)),
                        routes,
                        directory,
                        max_request_bytes=MAX_REQUEST_BYTES,
                        body_timeout=config.server.body_timeout,
                        requests=requests,
                    )
                )
                lane_app = app  # requests come over a lane into this, never forwarded again
                if ownership is not None:  # others' buckets forwarded to their owner
                    app = Forwarder(
                        app,
                        buckets=buckets,
                        directory=directory,
                        owners=ownership,
                        rules=messaging.rules,
                        auth=auth,
                        pool=peer_pool,
                        max_request_bytes=MAX_REQUEST_BYTES,
                        body_timeout=config.server.body_timeout,
                        admin_token=admin_token,
                    )
                    add_forwarding_metrics(metrics.collector, app.statistics)
                _callback_metrics(metrics.collector, buckets, sender)
                _fallback_metrics(metrics.collector, buckets, messaging.fallbacks)
                connections = ConnectionCap(config.server.max_connections)
                _connection_metrics(metrics.collector, connections)
                metrics.collector.add_labelled_counter(
                    "wadispatch_webhook_unapplied",
                    "Items of authentic WhatsApp webhooks not applied as they came (logged), by reason.",
                    "reason",
                    lambda: inbox.unapplied,
                )
                _field_metrics(metrics.collector, cloud_fields)
                _template_metrics(metrics.collector, catalog, template_sync)
                metrics.add(
                    NumberWatchCollector(
                        buckets=buckets,
                        wall=wall,
                        numbers=roster.watched,
                        watch=numbers.watch,
                        health=numbers.graph_health,
                    )
                )
                cold = await io.start(_run_cold, sender)
                syncing = await io.start(_run_scoped, template_sync.run)
                ownership_stopped = trio.Event()
                async with trio.open_nursery() as work:
                    host, port = parse_listen(config.server.listen, "server.listen")
                    async with trio.open_nursery() as http:
                        binds = await http.start(
                            functools.partial(
                                serve_frontdoor,
                                app,
                                host,
                                port,
                                shutdown.wait,
                                graceful_timeout=config.server.graceful_timeout,
                                cap=connections,
                                reuse_port=shared_port,
                                peer=peer_socket,
                            )
                        )
                        url = binds[0]
                        listening.bound(url)
                        if lane_socket is not None:
                            await http.start(
                                functools.partial(
                                    serve_lane,
                                    lane_app,
                                    lane_socket,
                                    shutdown.wait,
                                    max_request_bytes=MAX_REQUEST_BYTES,
                                    graceful_timeout=config.server.graceful_timeout,
                                )
                            )
                        if sandbox is not None:
                            for num in config.numbers:
                                sandbox.register(num, fleet.spec_of(num))
                        await work.start(supervisor.run)
                        await work.start(messaging.scheduler.run)
                        await work.start(messaging.fallbacks.run)
                        await http.start(_sample_until, sampler, shutdown)
                        if config.watch.check_at_start:
                            await root_nursery.start(numbers.check_numbers)
                        if roster_share is not None:  # what the cluster runs, before claiming buckets
                            roster_sync = await work.start(
                                _run_scoped, functools.partial(roster_share.run, numbers.sync)
                            )
                        if ownership is not None:
                            await work.start(_run_ownership, ownership, ownership_stopped)
                        if handle_signals:
                            await http.start(_watch_reload, ops, notifier, shutdown)
                        running = len(supervisor.actors())
                        notifier.ready(f"serving {running} numbers on {url}")
                        log.info("daemon.ready", url=url, numbers=running, owned=_owned(ownership))
                        if on_ready is not None:
                            on_ready()
                        task_status.started(
                            Running(
                                url=url,
                                buckets=buckets,
                                store=store,
                                wall=wall,
                                supervisor=supervisor,
                                directory=directory,
                                gateway=messaging.gateway,
                                scheduler=messaging.scheduler,
                                fallbacks=messaging.fallbacks,
                                inbox=inbox,
                                routes=routes,
                                quart_app=quart_app,
                                ops=ops,
                                metrics=metrics,
                                shutdown=shutdown,
                                cloud_fields=cloud_fields,
                                sampler=sampler,
                                catalog=catalog,
                                template_sync=template_sync,
                                numbers=numbers,
                                ownership=ownership,
                                simulator=sandbox.simulator if sandbox is not None else None,
                                simulator_url=sandbox.url if sandbox is not None else None,
                            )
                        )
                    # The front door has stopped and answered its last request.
                    log.info("daemon.draining", timeout=config.server.drain_timeout)
                    if roster_share is not None:
                        roster_sync.cancel()
                    supervisor.stop()
                    messaging.scheduler.stop()
                    messaging.fallbacks.stop()
                    work.cancel_scope.deadline = trio.current_time() + config.server.drain_timeout
                    messaging.scheduler.stop()
                    if ownership is not None:
                        # Each bucket drained, then let go: the others take it at once.
                        ownership.stop()
                        await ownership_stopped.wait()
                    supervisor.stop()
                cold.cancel()  # undelivered callbacks stay queued in LMDB
                syncing.cancel()
                await fleet.aclose()
                await peer_pool.aclose()
                for bucket in buckets.stores:
                    bucket.close()  # each writer commits what is queued, then returns
            root_nursery.cancel_scope.cancel()
    finally:
        for bucket in buckets.stores:
            bucket.close_env()
        log.info("daemon.stopped")


async def _run_ownership(
    ownership: Ownership,
    stopped: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The ownership, started once its first round of claims is done; ``stopped`` set once it returned."""
    try:
        await ownership.run(task_status=task_status)
    finally:
        stopped.set()


def _cluster_lists(
    cluster: ClusterConfig | None, buckets: Buckets, ownership: Ownership | None, pool: PeerPool
) -> ClusterLists | None:
    """How a list reads the buckets owned elsewhere. flock's daemons share one data root, so every
    bucket's live Store is open here; etcd's need not (each host may attach only its own buckets'
    volumes): a list asks the other owners for theirs."""
    if cluster is None or cluster.backend == "flock" or ownership is None:
        return None
    return ClusterLists(count=buckets.count, owners=ownership, here=buckets.is_local, pool=pool)


def _ownership_metrics(collector: DispatcherCollector, ownership: Ownership) -> None:
    collector.add_gauge(
        "wadispatch_buckets_owned",
        "Buckets this daemon owns now ([cluster]).",
        lambda: len(ownership.owned()),
    )
    collector.add_gauge(
        "wadispatch_cluster_members",
        "Daemons taking part in the cluster, as last counted.",
        lambda: ownership.live,
    )
    collector.add_gauge(
        "wadispatch_cluster_healthy",
        "1 while the ownership backend answers (etcd: the last keepalive succeeded), else 0.",
        lambda: float(ownership.healthy),
    )


def _url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _wake_all(*wakes: Callable[[], None]) -> None:
    for wake in wakes:
        wake()


def _owned(ownership: Ownership | None) -> list[int] | None:
    return None if ownership is None else sorted(ownership.owned())


@final
class ListeningUrl:
    """The front door's own address, known once hypercorn has bound its socket (port 0 picks one)."""

    def __init__(self) -> None:
        self._url: str | None = None

    def bound(self, url: str) -> None:
        self._url = url

    def get(self) -> str:
        if self._url is None:
            raise RuntimeError("the front door does not listen yet")
        return self._url


@attrs.frozen
class PublicUrl:
    """How customers reach us (media links): ``server.public_url``, else the address we listen on."""

    configured: str | None
    listening: ListeningUrl

    def get(self) -> str:
        return (self.configured or self.listening.get()).rstrip("/")


def sender_settings(cfg: CallbacksConfig) -> SenderSettings:
    return SenderSettings(
        concurrency=cfg.concurrency,
        per_destination=cfg.per_destination,
        lane_size=cfg.lane_size,
        timeout=cfg.timeout,
        backoff_initial=cfg.backoff_initial,
        backoff_max=cfg.backoff_max,
        give_up_after=cfg.give_up_after,
        poll_interval=cfg.poll_interval,
    )


def _wabas_by_account(config: Config) -> dict[str, list[str]]:
    by_account: dict[str, list[str]] = {}
    for waba in config.wabas:
        by_account.setdefault(waba.account, []).append(waba.id)
    return by_account


def _waba_sync(waba: WabaConfig, client: httpx.AsyncClient, sandbox: Sandbox | None) -> WabaSync:
    """How a ``[[wabas]]`` entry is kept in sync: Meta's Graph API, or the embedded simulator's."""
    if waba.simulated:
        assert sandbox is not None, "config.validate() requires [simulator] for a simulated WABA"
        base = sandbox.url
    else:
        base = waba_base_url(waba)
    where = f"wabas.{waba.id}.access_token"
    graph = GraphTemplates(
        graph=GraphClient(
            client=client,
            base_url=base,
            version=waba.graph_version,
            token=lambda: waba.access_token.resolve(where),
        ),
        waba=waba.id,
    )
    return WabaSync(graph=graph, interval=waba.sync_interval, app_id=waba.app_id)


async def _run_scoped(
    run: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``run`` (a service taking ``task_status``) in a scope of its own, for its owner to cancel."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            task_status.started(scope)


async def _run_cold(
    sender: CallbackSender, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
) -> None:
    """The callback sender in a scope of its own, cancelled after the actors stop."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            task_status.started(scope)
