"""A gateway with a fallback task over real LMDB and the in-process simulator, for MockClock tests.

Two On-Prem numbers of one account: ``ONE`` sends the primaries, ``TWO`` stands in as the
fallback sender (any second number will do: fallback is channel-agnostic). Statuses are
applied through a real ``Inbox`` (as a webhook would), which tells the fallback task as
the daemon wires it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from actors.number import NumberActor
from actors.supervisor import Supervisor
from actors.transport import Headers, Response
from dispatcher.config import FallbackConfig, ServiceConfig
from dispatcher.core import callbacks, ledger
from dispatcher.core.buckets import Buckets
from dispatcher.core.callbacks import CallbackEntry, entry_decoder
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.events import StatusEvent, WebhookEvents
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store
from dispatcher.core.template_file import Template
from dispatcher.messages.fallback import Fallbacks, status_listener
from dispatcher.messages.fallback_plan import FallbackRequest
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.service.messaging import Messaging
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.transport import InProcessTransport
from dispatcher.webhooks.inbox import Inbox
from tests.helpers.buckets import as_buckets
from tests.helpers.configs import number_config
from tests.helpers.fakes import error
from tests.helpers.intake import build_intake
from tests.helpers.simulated import sim_with

ACCOUNT: Final = "AC00000000000000000000000000000001"
ONE, TWO = "+15550000001", "+15550000002"
CUSTOMER: Final = "+15551234567"
SERVICE: Final = "MG" + "f" * 32
SHIPPED: Final = "HX" + "1" * 32
WINDOW: Final = "HX" + "2" * 32
CALLBACK: Final = "https://app.example/status"
T0: Final = 1_700_000_000.0


def templates(store: Store) -> TemplateRegistry:
    namespace = "cdb2df51_9816_c754_c5a4_64cdabdcad3e"
    return TemplateRegistry(
        store,
        [
            Template(
                sid=SHIPPED,
                account=ACCOUNT,
                namespace=namespace,
                name="order_shipped",
                language="en_US",
                body="Hi {{1}}, your order {{2}} has shipped.",
            ),
            Template(
                sid=WINDOW,
                account=ACCOUNT,
                namespace=namespace,
                name="message_waiting",
                language="en_US",
                body="We have a message for you: {{1}}",
            ),
        ],
    )


class Refusing:
    """A number's transport that answers sends to ``refused`` recipients with On-Prem error 1013
    (not a WhatsApp user: Twilio's 63003), and holds sends while ``stalled`` is set."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.refused: set[str] = set()
        self.stalled: trio.Event | None = None

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        if target == b"/v1/messages":
            if self.stalled is not None:
                await self.stalled.wait()
            if "+" + json.loads(body)["to"] in self.refused:
                return error(400, 1013, "User is not valid")
        return await self.inner.request(method, target, headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define
class FallbackWorld:
    buckets: Buckets
    wall: TrioWallClock
    sim: Simulator
    messaging: Messaging
    inbox: Inbox
    supervisor: Supervisor
    transports: dict[str, Refusing]

    @property
    def gateway(self) -> Gateway:
        return self.messaging.gateway

    @property
    def fallbacks(self) -> Fallbacks:
        return self.messaging.fallbacks

    async def create(self, fallback: FallbackRequest | None = None, **kw: object) -> MessageRecord:
        fields: dict[str, object] = {
            "to": CUSTOMER,
            "from_": ONE,
            "body": "Your code is 4711",
            "status_callback": CALLBACK,
        }
        fields.update(kw)
        if fallback is not None:
            fields["fallback"] = fallback
        return await self.gateway.create(ACCOUNT, SendRequest(**fields))  # type: ignore[arg-type]

    def record(self, sid: str) -> MessageRecord:
        found = self.buckets.message(sid)
        assert found is not None, sid
        return ledger.load(found[1])

    async def status(self, sid: str, status: str, code: int | None = None) -> None:
        """A status webhook for message ``sid`` (sent already), as its number's webhook brings it."""
        record = self.record(sid)
        assert record.channel_id is not None
        event = StatusEvent(channel_id=record.channel_id, status=status, error_code=code, error_message="x")
        await self.inbox.apply(_Info(record.from_number), WebhookEvents(statuses=[event]))

    def texts(self, number: str) -> list[object]:
        return [r.content for r in self.sim.received(number)]

    def callbacks_of(self, sid: str) -> list[dict[str, str]]:
        entries: list[CallbackEntry] = [
            entry_decoder.decode(v) for store in self.buckets.stores for _, v in store.scan(callbacks.DB, b"")
        ]
        return [dict(e.params) for e in entries if e.sid == sid]

    def messages(self) -> int:
        return sum(store.count(b"messages", b"") for store in self.buckets.stores)


@attrs.frozen
class _Info:
    number: str
    account_sid: str = ACCOUNT
    status_callback: str | None = None
    inbound_url: str | None = None


def service(**fallback: object) -> ServiceConfig:
    """The account's service over ``ONE``, falling back to ``TWO`` as ``fallback`` says."""
    return ServiceConfig(
        sid=SERVICE, account=ACCOUNT, numbers=[ONE], fallback=FallbackConfig(from_=TWO, **fallback)
    )


async def open_world(
    nursery: trio.Nursery,
    store: Store | Buckets,
    *,
    wall: TrioWallClock | None = None,
    running: tuple[str, ...] = (ONE, TWO),
    info: Callable[[str], NumberInfo] | None = None,
    services: tuple[ServiceConfig, ...] = (),
    fire: bool = True,
    more: Sequence[tuple[NumberInfo, NumberActor]] = (),
) -> FallbackWorld:
    """``store``: one Store (a one-bucket root) or the buckets of a root;
    ``running``: the numbers whose actors run (another number's messages wait in its outbox);
    ``fire``: run the fallback task (else the test calls ``fire_due``); ``more``: other numbers of
    the account and their actors (an SMS number, say)."""
    buckets = as_buckets(store)
    wall = wall or TrioWallClock(start=T0)
    sim = sim_with(wall, ONE, TWO)
    transports = {n: Refusing(InProcessTransport(sim, n)) for n in (ONE, TWO)}
    actors = [
        build_actor(
            number_config(n, rate=1000, burst=1000), transports[n], store=buckets.for_number(n), wall=wall
        )
        for n in running
    ]
    supervisor = Supervisor([*actors, *(actor for _, actor in more)])
    messaging = build_intake(
        buckets,
        supervisor=supervisor,
        accounts={ACCOUNT: "token"},
        numbers={
            **{n: (info(n) if info is not None else NumberInfo(n, ACCOUNT, "s")) for n in (ONE, TWO)},
            **{extra.number: extra for extra, _ in more},
        },
        wall=wall,
        templates=templates(buckets.stores[0]),
        services=Services(services, buckets),
    )
    inbox = Inbox(
        buckets=buckets,
        wall=wall,
        public_url=lambda: "https://gw.example",
        on_status=status_listener(messaging.handoff, messaging.fallbacks),
    )
    await nursery.start(supervisor.run)
    await nursery.start(messaging.scheduler.run)
    if fire:
        await nursery.start(messaging.fallbacks.run)
    return FallbackWorld(buckets, wall, sim, messaging, inbox, supervisor, transports)
