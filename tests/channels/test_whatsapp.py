"""WhatsApp specifics end to end under MockClock: gateway -> LMDB -> actor -> simulator (no sockets)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import pytest
import trio
import trio.testing

from actors.supervisor import Supervisor
from dispatcher.config import ServiceConfig
from dispatcher.core import ledger, segments, window
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store, WriteTxn
from dispatcher.core.template_file import Template
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.gateway import Gateway
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.scheduler import Scheduler
from dispatcher.messages.services import Services
from dispatcher.messages.templates import TemplateRegistry
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers.buckets import as_buckets
from tests.helpers.configs import number_config
from tests.helpers.fakes import FakeApi, error
from tests.helpers.intake import build_intake
from tests.helpers.messages import wait_for
from tests.helpers.simulated import sim_with

ACCOUNT = "AC00000000000000000000000000000001"
ONE, TWO = "+15550000001", "+15550000002"
CUSTOMER = "+15551234567"
SERVICE = "MG" + "a" * 32
SHIPPED = "HX" + "1" * 32
T0 = 1_700_000_000.0
HOUR = 3600.0


@attrs.define
class World:
    gateway: Gateway
    scheduler: Scheduler
    sim: Simulator
    wall: TrioWallClock
    supervisor: Supervisor

    async def create(self, **kw: object) -> MessageRecord:
        fields: dict[str, object] = {"to": CUSTOMER, "from_": ONE, "body": "hello"}
        fields.update(kw)
        return await self.gateway.create(ACCOUNT, SendRequest(**fields))  # type: ignore[arg-type]

    def record(self, sid: str) -> MessageRecord:
        return self.gateway.fetch(ACCOUNT, sid)

    def received(self, number: str = ONE) -> list[tuple[str, object]]:
        return [(r.type, r.content) for r in self.sim.received(number)]


def templates(store: Store) -> TemplateRegistry:
    return TemplateRegistry(
        store,
        [
            Template(
                sid=SHIPPED,
                account=ACCOUNT,
                namespace="cdb2df51_9816_c754_c5a4_64cdabdcad3e",
                name="order_shipped",
                language="en_US",
                body="Hi {{1}}, your order {{2}} has shipped.",
            )
        ],
    )


async def open_world(
    nursery: trio.Nursery,
    store: Store,
    *,
    enforce_window: bool = False,
    start_actors: bool = True,
    wall: TrioWallClock | None = None,
) -> World:
    wall = wall or TrioWallClock(start=T0)
    sim = sim_with(wall, ONE, TWO)
    actors = [
        build_actor(
            number_config(n, rate=1000, burst=1000), InProcessTransport(sim, n), store=store, wall=wall
        )
        for n in (ONE, TWO)
    ]
    supervisor = Supervisor(actors)
    intake = build_intake(
        store,
        supervisor=supervisor,
        accounts={ACCOUNT: "token"},
        numbers={n: NumberInfo(n, ACCOUNT, "s", enforce_window=enforce_window) for n in (ONE, TWO)},
        wall=wall,
        templates=templates(store),
        services=Services(
            [ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=[ONE, TWO])], as_buckets(store)
        ),
        max_body_chars=20_000,
    )
    if start_actors:
        await nursery.start(supervisor.run)
    await nursery.start(intake.scheduler.run)
    return World(intake.gateway, intake.scheduler, sim, wall, supervisor)


def inbound(number: str, customer: str, at: float) -> Callable[[WriteTxn], None]:
    def fn(txn: WriteTxn) -> None:
        window.touch(txn, number, customer, at)

    return fn


async def code_of(world: World, **kw: object) -> int:
    with pytest.raises(TwilioError) as info:
        await world.create(**kw)
    return info.value.code


# -- segmentation ----------------------------------------------------------------------------


async def test_a_long_body_goes_out_as_ordered_segments_before_the_next_message(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    body = " ".join(f"word{i}" for i in range(2000))  # 17,889 characters
    long = await world.create(body=body)
    after = await world.create(body="and then this")
    assert long.num_segments == long.parts == len(segments.split(body)) == 5
    await wait_for(lambda: len(world.sim.received(ONE)) == 6)
    texts = [content for _, content in world.received()]
    assert texts == [*segments.split(body), "and then this"]  # strictly in order
    assert world.record(long.sid).status == "sent" and world.record(after.sid).status == "sent"
    assert writer.count(b"outbox", b"") == 0


async def test_segments_recovered_after_a_restart_still_go_in_order(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, start_actors=False)
    body = " ".join(f"w{i}" for i in range(2000))  # 8,889 characters
    record = await world.create(body=body)
    assert writer.count(b"outbox", b"") == record.parts == 3
    await nursery.start(world.supervisor.run)  # recovery, not notify(), queues the parts
    await wait_for(lambda: len(world.sim.received(ONE)) == 3)
    assert [c for _, c in world.received()] == segments.split(body)


# -- templates -------------------------------------------------------------------------------


async def test_content_sid_sends_a_whatsapp_template(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, enforce_window=True)  # templates need no window
    record = await world.create(body=None, content_sid=SHIPPED, content_variables='{"1":"Ada","2":"#42"}')
    assert record.body == "Hi Ada, your order #42 has shipped." and record.sid.startswith("SM")
    await wait_for(lambda: len(world.sim.received(ONE)) == 1)
    kind, content = world.received()[0]
    assert kind == "template"
    assert content == {
        "namespace": "cdb2df51_9816_c754_c5a4_64cdabdcad3e",
        "name": "order_shipped",
        "language": {"policy": "deterministic", "code": "en_US"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "#42"}]}
        ],
    }


async def test_a_body_matching_a_template_goes_as_that_template_outside_the_window(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, enforce_window=True)
    record = await world.create(body="Hi Grace, your order 7 has shipped.")
    assert record.template is not None and record.template.params == ["Grace", "7"]
    await wait_for(lambda: len(world.sim.received(ONE)) == 1)
    assert world.received()[0][0] == "template"
    # Text that is not a template still needs the window.
    assert await code_of(world, body="Hi Grace, your order 7 has shipped!") == 63016


# -- the 24 h window ---------------------------------------------------------------------------


async def test_window_edge_23h59m_sends_24h01m_is_refused_with_63016(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, enforce_window=True)
    assert await code_of(world) == 63016  # the customer never wrote
    await writer.write(inbound(ONE, CUSTOMER, world.wall.now()))
    await trio.sleep(23 * HOUR + 59 * 60)
    ok = await world.create(body="still inside")
    await trio.sleep(2 * 60)  # 24 h 01 m after the customer's message
    assert await code_of(world, body="too late") == 63016
    assert await code_of(world, from_=TWO) == 63016  # the window is per sender number
    await wait_for(lambda: len(world.sim.received(ONE)) == 1)
    assert world.record(ok.sid).status == "sent" and world.received() == [("text", "still inside")]


async def test_whatsapps_own_window_error_470_fails_the_message_with_63016(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    wall = TrioWallClock(start=T0)
    api = FakeApi(wall.now)
    api.script = lambda body, n: error(400, 470, "Message failed to send because more than 24 hours")
    actor = build_actor(number_config(ONE), api, store=writer, wall=wall)
    supervisor = Supervisor([actor])
    gateway = build_intake(
        writer,
        supervisor=supervisor,
        accounts={ACCOUNT: "t"},
        numbers={ONE: NumberInfo(ONE, ACCOUNT, "s", enforce_window=False)},
        wall=wall,
    ).gateway
    await nursery.start(supervisor.run)
    record = await gateway.create(ACCOUNT, SendRequest(to=CUSTOMER, from_=ONE, body="hi"))
    await wait_for(lambda: gateway.fetch(ACCOUNT, record.sid).status == "failed")
    assert gateway.fetch(ACCOUNT, record.sid).error_code == 63016


# -- media -----------------------------------------------------------------------------------


async def test_each_media_url_becomes_a_media_message_of_its_kind(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    urls = [
        "https://cdn.example.com/a.jpg",
        "https://cdn.example.com/b.mp4",
        "https://cdn.example.com/c.ogg",
        "https://cdn.example.com/d/invoice.pdf",
        "https://cdn.example.com/e.webp",
    ]
    record = await world.create(body="Your receipt", media_urls=urls)
    assert record.sid.startswith("MM") and record.num_media == 5 and record.num_segments == 1
    await wait_for(lambda: len(world.sim.received(ONE)) == 5)
    assert world.received() == [
        ("image", {"link": urls[0], "caption": "Your receipt"}),
        ("video", {"link": urls[1]}),
        ("audio", {"link": urls[2]}),
        ("document", {"link": urls[3], "filename": "invoice.pdf"}),
        ("sticker", {"link": urls[4]}),
    ]
    assert world.record(record.sid).status == "sent"


# -- validity ----------------------------------------------------------------------------------


async def test_a_message_not_sent_within_its_validity_period_fails_30036_and_is_never_sent(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, start_actors=False)
    late = await world.create(body="expires", validity_period="60")
    fine = await world.create(body="no limit", to="+15557654321")
    await trio.sleep(61)  # the number's actor was down for longer than the validity period
    await nursery.start(world.supervisor.run)
    await wait_for(lambda: world.record(fine.sid).status == "sent")
    await wait_for(lambda: world.record(late.sid).status == "failed")
    assert world.record(late.sid).error_code == 30036
    assert [c for _, c in world.received()] == ["no limit"]


# -- Messaging Services ------------------------------------------------------------------------


async def test_a_service_picks_the_number_with_the_open_window_and_sticks_to_it(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, enforce_window=True)
    await writer.write(inbound(TWO, CUSTOMER, world.wall.now()))
    first = await world.create(from_=None, messaging_service_sid=SERVICE)
    assert first.from_number == TWO and first.messaging_service_sid == SERVICE
    await writer.write(inbound(ONE, CUSTOMER, world.wall.now() + 1))  # now ONE is more recent
    again = await world.create(from_=None, messaging_service_sid=SERVICE)
    assert again.from_number == TWO  # sticky, durably
    service = ServiceConfig(sid=SERVICE, account=ACCOUNT, numbers=[ONE, TWO])
    assert Services([service], as_buckets(writer)).sticky(service, CUSTOMER) == TWO


async def test_service_choice_without_a_window_is_stable_per_recipient(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    picks = {}
    for i in range(40):
        record = await world.create(to=f"+1555300{i:04d}", from_=None, messaging_service_sid=SERVICE)
        picks[record.to_number] = record.from_number
    assert set(picks.values()) == {ONE, TWO}  # spread over the pool
    for to, number in picks.items():
        assert (await world.create(to=to, from_=None, messaging_service_sid=SERVICE)).from_number == number


@pytest.mark.parametrize("sid", ["MG123", "MG" + "b" * 32])
async def test_an_unknown_messaging_service_is_21705(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery, sid: str
) -> None:
    world = await open_world(nursery, writer)
    assert await code_of(world, from_=None, messaging_service_sid=sid) == 21705


# -- scheduled messages ------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_scheduled_message_fires_at_send_at_and_not_before(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    due = world.wall.now() + 2 * HOUR
    record = await world.create(
        from_=None, messaging_service_sid=SERVICE, send_at=iso(due), schedule_type="fixed", body="later"
    )
    assert record.status == "scheduled" and record.send_at == due
    assert writer.count(b"outbox", b"") == 0 and world.scheduler.pending() == 1
    await trio.sleep(2 * HOUR - 1)
    assert world.received(record.from_number) == [] and world.record(record.sid).status == "scheduled"
    await wait_for(lambda: world.record(record.sid).status == "sent")
    assert world.wall.now() - due < 1.0
    assert world.received(record.from_number) == [("text", "later")]
    assert world.scheduler.pending() == 0


async def test_a_canceled_scheduled_message_never_goes(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    due = world.wall.now() + HOUR
    record = await world.create(
        from_=None, messaging_service_sid=SERVICE, send_at=iso(due), schedule_type="fixed"
    )
    canceled = await writer.write(ledger.cancel(record.sid, ACCOUNT, world.wall.now()))
    assert canceled.status == "canceled" and world.scheduler.pending() == 0
    again = await writer.write(ledger.cancel(record.sid, ACCOUNT, world.wall.now()))
    assert again.status == "canceled"  # canceling twice changes nothing
    await trio.sleep(2 * HOUR)
    assert world.record(record.sid).status == "canceled" and world.received(record.from_number) == []


async def test_scheduled_messages_survive_a_restart_and_fire_when_overdue(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    wall = TrioWallClock(start=T0)
    async with trio.open_nursery() as first:
        world = await open_world(first, writer, wall=wall)
        due = wall.now() + HOUR
        record = await world.create(
            from_=None, messaging_service_sid=SERVICE, send_at=iso(due), schedule_type="fixed"
        )
        first.cancel_scope.cancel()  # the daemon goes down before SendAt
    await trio.sleep(3 * HOUR)
    async with trio.open_nursery() as second:
        world = await open_world(second, writer, wall=wall)
        await wait_for(lambda: world.record(record.sid).status == "sent")
        assert len(world.received(record.from_number)) == 1
        second.cancel_scope.cancel()


async def test_a_free_form_scheduled_message_whose_window_closed_fails_63016(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer, enforce_window=True)
    await writer.write(inbound(ONE, CUSTOMER, world.wall.now()))
    await writer.write(inbound(TWO, CUSTOMER, world.wall.now()))
    record = await world.create(
        from_=None,
        messaging_service_sid=SERVICE,
        send_at=iso(world.wall.now() + 30 * HOUR),
        schedule_type="fixed",
    )
    template = await world.create(
        from_=None,
        messaging_service_sid=SERVICE,
        send_at=iso(world.wall.now() + 30 * HOUR),
        schedule_type="fixed",
        body=None,
        content_sid=SHIPPED,
        content_variables='{"1":"A","2":"B"}',
    )
    await trio.sleep(31 * HOUR)
    assert world.record(record.sid).status == "failed" and world.record(record.sid).error_code == 63016
    await wait_for(lambda: world.record(template.sid).status == "sent")


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"send_at": "+1h", "schedule_type": "fixed"}, 35114),  # not a timestamp
        ({"send_at": 10 * 60, "schedule_type": "fixed"}, 35114),  # under 15 minutes ahead
        ({"send_at": 36 * 86400, "schedule_type": "fixed"}, 35114),  # over 35 days ahead
        ({"send_at": HOUR, "schedule_type": "recurring"}, 35114),
        ({"send_at": HOUR, "schedule_type": None}, 35114),
        ({"send_at": None, "schedule_type": "fixed"}, 35114),
        ({"send_at": HOUR, "schedule_type": "fixed", "service": False}, 35114),  # needs a service
    ],
)
async def test_bad_scheduling_gets_35114(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    kw: dict[str, object],
    code: int,
) -> None:
    world = await open_world(nursery, writer)
    send_at = kw["send_at"]
    if isinstance(send_at, float | int):
        send_at = iso(world.wall.now() + send_at)
    fields: dict[str, object] = {"send_at": send_at, "schedule_type": kw["schedule_type"]}
    if kw.get("service", True):
        fields.update(from_=None, messaging_service_sid=SERVICE)
    assert await code_of(world, **fields) == code
    assert writer.count(b"messages", b"") == 0  # nothing stored


async def test_ledger_outbox_entries_carry_the_part_index(writer: Store) -> None:
    record = MessageRecord(
        sid="SM" + "0" * 32, account_sid=ACCOUNT, from_number=ONE, to_number=CUSTOMER, body="x", parts=3
    )
    first = await writer.write(ledger.accept(record))
    from dispatcher.core.models import entry_decoder

    entries = [entry_decoder.decode(v) for _, v in writer.scan(b"outbox", b"")]
    assert [e.part for e in entries] == [0, 1, 2] and first == 1


async def test_stop_ends_the_scheduler_at_once_and_keeps_what_is_not_due(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    world = await open_world(nursery, writer)
    await world.create(
        from_=None, messaging_service_sid=SERVICE, send_at=iso(world.wall.now() + HOUR), schedule_type="fixed"
    )
    scheduler = Scheduler(buckets=as_buckets(writer), wall=world.wall, notify=lambda seq, record, part: None)
    start = trio.current_time()
    async with trio.open_nursery() as inner:
        await inner.start(scheduler.run)
        await trio.sleep(1)
        scheduler.stop()
    assert trio.current_time() - start == 1  # returned at once, not at the next due time
    assert scheduler.pending() == 1 and scheduler.next_due() == pytest.approx(
        world.wall.now() + HOUR - 1, abs=0.01
    )
