"""No second send because of our own failure: when storage cannot record a send's outcome.

The actor keeps the outcome, retries its write, starts no new send and says
``storage`` (health, metrics, log) instead of crashing; a restart commits what
was held instead of sending it again. Real LMDB (a tiny map that really fills),
plus a seam at the writer for a full disk; the simulator's in-process transport
counts what reached WhatsApp; MockClock.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest
import structlog
import trio
import trio.testing
from rich.console import Console

from actors import number as number_mod
from actors import recording
from actors.number import NumberActor
from actors.supervisor import Supervisor
from actors.transport import Headers, Response
from actors.unrecorded import Unrecorded
from dispatcher import admincli
from dispatcher import config as configuration
from dispatcher.core import ledger
from dispatcher.core import store as store_mod
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.store import Store, StoreError, StoreFullError, WriteTxn, number_key
from dispatcher.ops.metrics import DispatcherCollector, RequestCounts
from dispatcher.ops.operations import NumberStatus, Status
from dispatcher.service.fleet import Fleet
from dispatcher.service.numbers import build_actor
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.transport import InProcessTransport
from tests.helpers import actors as on_fakes
from tests.helpers.buckets import as_buckets
from tests.helpers.configs import fleet_config, number_config
from tests.helpers.daemon import ACCOUNT, messages_path, running_daemon, sandbox_config
from tests.helpers.intake import intake_for_config, reloader_for
from tests.helpers.messages import record_of, submit, wait_for, wait_status
from tests.helpers.metrics import parse, value
from tests.helpers.simulated import sim_with

NUMBER = "+15550000001"
WALL_START = 1_700_000_000.0


def delivered(sim: Simulator) -> Counter[tuple[str, object]]:
    """How many times each (recipient, body) reached the simulator."""
    return Counter((r.recipient, r.content) for r in sim.received(NUMBER))


async def fill(store: Store) -> None:
    """Write filler until the map is really full: even a small write needing a page fails."""
    key = 0
    for size in (4000, 500, 50):
        refused = 0
        while refused < 3:
            key += 1

            def put(txn: WriteTxn, k: bytes = key.to_bytes(8, "big"), n: int = size) -> None:
                txn.put(b"meta", b"filler\x00" + k, b"x" * n)

            try:
                await store.write(put)
                refused = 0
            except StoreFullError:
                refused += 1


class FailingCommits:
    """The writer's seam: while ``error`` is set, every commit raises it (nothing is written)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.error: Exception | None = None
        self.refused = 0
        real = store._commit

        def commit(batch: list) -> None:  # type: ignore[type-arg]
            if self.error is not None:
                self.refused += 1
                raise self.error
            real(batch)

        monkeypatch.setattr(store, "_commit", commit)


def metric(actor: NumberActor, store: Store, name: str) -> float:
    collector = DispatcherCollector(
        actors=lambda: [actor], buckets=as_buckets(store), requests=RequestCounts()
    )
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("number") == NUMBER:
                return float(sample.value)
    raise AssertionError(f"no {name} for {NUMBER}")


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Store]:
    """A real 1 MiB map that cannot grow (no map_max): ``fill`` fills it for real."""
    store = Store(tmp_path / "small", map_size=1 << 20, commit_in_thread=False)
    yield store
    store.close_env()


async def test_a_full_map_holds_the_outcomes_pauses_sending_and_records_them_once_it_grows(
    autojump_clock: trio.testing.MockClock, small_store: Store, nursery: trio.Nursery
) -> None:
    await nursery.start(small_store.run_writer)
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    actor = build_actor(
        number_config(NUMBER, rate=1000, burst=1000),
        InProcessTransport(sim, NUMBER),
        store=small_store,
        wall=wall,
    )
    # Two messages for each of 12 recipients, queued before the map fills.
    records = [
        await submit(small_store, None, f"+1555100{i % 12:04d}", f"m{i}", number=NUMBER) for i in range(24)
    ]
    await fill(small_store)
    supervisor = Supervisor([actor], base_delay=0.1)
    with structlog.testing.capture_logs() as logs:
        await nursery.start(supervisor.run)
        await wait_for(lambda: actor.storage_failing)
        await trio.sleep(300)  # five minutes of a full map

        heads = delivered(sim)
        assert set(heads.values()) == {1}  # each answered send once, nothing again
        assert actor.statistics().unrecorded == len(heads)
        assert len(heads) < len(records)  # the rest wait: no new send while storage fails
        assert all(record_of(small_store, r.sid).status == "queued" for r in records)
        assert supervisor.restarts(NUMBER) == 0  # no crash, no crash loop
        assert supervisor.states() == {NUMBER: "storage"}
        assert supervisor.reasons() == {NUMBER: "storage"}
        stats = actor.statistics()
        assert stats.storage == "storage is full" and stats.storage_failures > len(heads)
        assert metric(actor, small_store, "wadispatch_number_storage_failing") == 1.0
        assert metric(actor, small_store, "wadispatch_unrecorded_outcomes") == len(heads)
        assert metric(actor, small_store, "wadispatch_outcome_write_failures_total") == stats.storage_failures

        small_store.env.set_mapsize(8 << 20)  # the operator made room
        await wait_for(lambda: all(record_of(small_store, r.sid).status == "sent" for r in records))

    assert delivered(sim) == Counter((f"1555100{i % 12:04d}", f"m{i}") for i in range(24))
    assert small_store.count(b"outbox", number_key(NUMBER)) == 0
    assert supervisor.states() == {NUMBER: "running"} and supervisor.reasons() == {}
    stats = actor.statistics()
    assert stats.unrecorded == 0 and stats.storage is None and stats.sent == 24
    events = [e["event"] for e in logs if e["event"].startswith("storage.")]
    # Once per state change, plus "still failing" every minute: never one line per try.
    assert events[0] == "storage.failing" and events[-1] == "storage.recovered"
    assert events.count("storage.failing") == 1 and events.count("storage.recovered") == 1
    assert 4 <= events.count("storage.still_failing") <= 5
    assert not any(e["event"] == "actor.crashed" for e in logs)


async def test_a_full_disk_keeps_order_per_recipient_and_sends_each_message_once(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    actor = build_actor(
        number_config(NUMBER, rate=1000, burst=1000), InProcessTransport(sim, NUMBER), store=writer, wall=wall
    )
    disk = FailingCommits(writer, monkeypatch)
    supervisor = Supervisor([actor], base_delay=0.1)
    await nursery.start(supervisor.run)
    # Three messages to each of three recipients, accepted before the disk filled up.
    records = [await submit(writer, None, f"+1555200{i % 3:04d}", f"m{i}", number=NUMBER) for i in range(9)]
    disk.error = OSError(errno.ENOSPC, "No space left on device")
    for r in records:
        assert r.outbox_seq is not None
        actor.notify(r.outbox_seq, r)
    await wait_for(lambda: actor.statistics().unrecorded == 3)  # the three heads were answered
    await trio.sleep(120)
    assert supervisor.states() == {NUMBER: "storage"}
    assert "No space left on device" in (actor.statistics().storage or "")
    assert delivered(sim) == Counter({(f"1555200{i:04d}", f"m{i}"): 1 for i in range(3)})
    assert supervisor.restarts(NUMBER) == 0 and disk.refused > 3

    disk.error = None
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in records))
    assert delivered(sim) == Counter((f"1555200{i % 3:04d}", f"m{i}") for i in range(9))
    for recipient in range(3):  # acceptance order per recipient, across the failure
        bodies = [r.content for r in sim.received(NUMBER) if r.recipient == f"1555200{recipient:04d}"]
        assert bodies == [f"m{i}" for i in range(recipient, 9, 3)]
    assert supervisor.states() == {NUMBER: "running"}


class CrashOn:
    """A transport that raises a bug (not a transport error) on the first send of ``body``,
    ``after`` seconds into it (the request never reaches the simulator)."""

    def __init__(self, inner: InProcessTransport, body: str, *, after: float = 0.0) -> None:
        self.inner = inner
        self.body = body.encode()
        self.after = after
        self.crashed = False

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        if target == b"/v1/messages" and self.body in body and not self.crashed:
            self.crashed = True
            await trio.sleep(self.after)
            raise RuntimeError("bug in the channel adapter")
        return await self.inner.request(method, target, headers, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


def slow_outcome_writes(store: Store, monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[str]:
    """Outcome commits take ``seconds`` (a slow disk); returns the names of the writes seen."""
    real = store.write
    seen: list[str] = []

    async def write(fn: Callable[[WriteTxn], object]) -> object:
        name = getattr(fn, "__qualname__", "")
        seen.append(name)
        if name.startswith("mark_sent"):
            await trio.sleep(seconds)
        return await real(fn)

    monkeypatch.setattr(store, "write", write)
    return seen


async def test_a_restart_never_sends_again_a_message_whose_answer_was_received(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The actor crashes (elsewhere) while the 'sent' of an answered send is being written."""
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    transport = CrashOn(InProcessTransport(sim, NUMBER), "crashes")
    actor = build_actor(number_config(NUMBER, rate=1000, burst=1000), transport, store=writer, wall=wall)
    supervisor = Supervisor([actor], base_delay=0.1)
    await nursery.start(supervisor.run)
    slow_outcome_writes(writer, monkeypatch, 5.0)
    answered = await submit(writer, actor, "+15553000001", "answered", number=NUMBER)
    await wait_for(lambda: actor.statistics().unrecorded == 1)  # answered, its 'sent' being written
    crashing = await submit(writer, actor, "+15553000002", "crashes", number=NUMBER)
    await wait_for(lambda: supervisor.restarts(NUMBER) == 1)
    await wait_for(
        lambda: (
            record_of(writer, answered.sid).status == "sent"
            and record_of(writer, crashing.sid).status == "sent"
        )
    )
    assert delivered(sim) == Counter({("15553000001", "answered"): 1, ("15553000002", "crashes"): 1})
    assert writer.count(b"outbox", number_key(NUMBER)) == 0
    raw = writer.get(b"messages", ledger.sid_key(answered.sid))
    assert raw is not None and ledger.load(raw).attempts == 1
    assert actor.statistics().unrecorded == 0


async def test_outcomes_held_while_storage_fails_survive_a_crash_and_are_never_sent_again(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Storage fails; a send in flight then crashes the actor: the restart commits, never resends."""
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    transport = CrashOn(InProcessTransport(sim, NUMBER), "crashes", after=1.0)
    actor = build_actor(number_config(NUMBER, rate=1000, burst=1000), transport, store=writer, wall=wall)
    disk = FailingCommits(writer, monkeypatch)
    supervisor = Supervisor([actor], base_delay=0.1)
    await nursery.start(supervisor.run)
    answered = await submit(writer, None, "+15553000001", "answered", number=NUMBER)
    crashing = await submit(writer, None, "+15553000002", "crashes", number=NUMBER)
    disk.error = OSError(errno.EIO, "Input/output error")
    for r in (answered, crashing):
        assert r.outbox_seq is not None
        actor.notify(r.outbox_seq, r)
    await wait_for(lambda: supervisor.restarts(NUMBER) == 1)
    assert actor.statistics().unrecorded == 1
    await trio.sleep(60)  # restarted, storage still failing: nothing is sent
    assert supervisor.states() == {NUMBER: "storage"}
    assert delivered(sim) == Counter({("15553000001", "answered"): 1})

    disk.error = None
    await wait_for(
        lambda: (
            record_of(writer, answered.sid).status == "sent"
            and record_of(writer, crashing.sid).status == "sent"
        )
    )
    assert delivered(sim) == Counter({("15553000001", "answered"): 1, ("15553000002", "crashes"): 1})
    assert supervisor.restarts(NUMBER) == 1 and supervisor.states() == {NUMBER: "running"}


async def test_an_outcome_that_can_never_be_written_leaves_the_outbox_and_is_not_sent_again(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that fails by itself (here LMDB's MDB_BAD_VALSIZE) would fail on every retry."""
    real = ledger.mark_sent

    def bad_mark_sent(*args: object, **kwargs: object) -> Callable[[WriteTxn], None]:
        def fn(txn: WriteTxn) -> None:
            raise lmdb.BadValsizeError("mdb_put: MDB_BAD_VALSIZE")

        return fn if args[2] == poisoned.sid else real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(number_mod.ledger, "mark_sent", bad_mark_sent)
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    actor = build_actor(number_config(NUMBER), InProcessTransport(sim, NUMBER), store=writer, wall=wall)
    supervisor = Supervisor([actor], base_delay=0.1)
    await nursery.start(supervisor.run)
    with structlog.testing.capture_logs() as logs:
        poisoned = await submit(writer, actor, "+15554000001", "poisoned", number=NUMBER)
        after = await submit(writer, actor, "+15554000001", "after", number=NUMBER)
        await wait_for(lambda: record_of(writer, after.sid).status == "sent")
    assert delivered(sim) == Counter({("15554000001", "poisoned"): 1, ("15554000001", "after"): 1})
    assert writer.count(b"outbox", number_key(NUMBER)) == 0
    assert supervisor.restarts(NUMBER) == 0
    [unwritable] = [e for e in logs if e["event"] == "outcome.unwritable"]
    assert unwritable["sid"] == poisoned.sid and "BadValsizeError" in unwritable["error"]


async def test_a_successor_commits_its_predecessors_outcomes_instead_of_sending_them(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live reload swaps the actor while storage fails: the outcomes it held pass to the new one."""
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    held = Unrecorded()
    config = number_config(NUMBER, rate=1000, burst=1000)
    old = build_actor(config, InProcessTransport(sim, NUMBER), store=writer, wall=wall, unrecorded=held)
    disk = FailingCommits(writer, monkeypatch)
    supervisor = Supervisor([old], base_delay=0.1)
    await nursery.start(supervisor.run)
    records = [await submit(writer, None, f"+1555500{i:04d}", "once", number=NUMBER) for i in range(4)]
    disk.error = lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL")  # no map_max: the map cannot grow
    for r in records:
        assert r.outbox_seq is not None
        old.notify(r.outbox_seq, r)
    await wait_for(lambda: len(held) == 4)
    new = build_actor(config, InProcessTransport(sim, NUMBER), store=writer, wall=wall, unrecorded=held)
    await supervisor.replace(new, timeout=5.0)  # the old one cannot finish: cancelled after 5 s
    assert len(held) == 4 and supervisor.actor(NUMBER) is new
    await trio.sleep(30)
    disk.error = None
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in records))
    assert sum(delivered(sim).values()) == 4 and set(delivered(sim).values()) == {1}
    assert len(held) == 0 and new.statistics().storage is None


async def test_recording_an_outcome_twice_changes_nothing(writer: Store) -> None:
    record = await submit(writer, None, "+15556000001", "hello", number=NUMBER)
    seq = record.outbox_seq
    assert seq is not None
    await writer.write(ledger.mark_sent(NUMBER, seq, record.sid, "wamid.A", WALL_START))
    await writer.write(ledger.mark_sent(NUMBER, seq, record.sid, "wamid.A", WALL_START + 5))
    await writer.write(ledger.mark_failed(NUMBER, seq, record.sid, 30008, "late", WALL_START + 6))
    raw = writer.get(b"messages", ledger.sid_key(record.sid))
    assert raw is not None
    again = ledger.load(raw)
    assert (again.status, again.attempts, again.date_sent) == ("sent", 1, WALL_START)
    assert again.error_code is None


async def test_a_new_recipients_tier_count_that_cannot_be_written_holds_its_send(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cloud: a business-initiated recipient is counted (durably) before its first send; while
    that count cannot be written, nothing is sent, and it is counted once storage is back."""
    actor, api = on_fakes.cloud_actor(writer, limit=10)
    disk = FailingCommits(writer, monkeypatch)
    await nursery.start(actor.run)
    record = await on_fakes.submit(writer, None, "15557000001")
    disk.error = OSError(errno.ENOSPC, "No space left on device")
    assert record.outbox_seq is not None
    actor.notify(record.outbox_seq, record)
    await wait_for(lambda: actor.storage_failing)
    await trio.sleep(60)
    assert api.attempts == [] and actor.statistics().tier_used == 0
    disk.error = None
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert len(api.sent) == 1 and not actor.storage_failing
    assert [key for key, _ in writer.scan(b"tier", number_key(NUMBER))] == [
        number_key(NUMBER, b"15557000001")
    ]


async def test_the_daemon_reports_storage_and_sends_once_over_real_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: /healthz and /metrics say ``storage`` while the disk is full; nothing is resent."""
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            assert daemon.simulator is not None
            actor = daemon.supervisor.actor(NUMBER)
            assert actor is not None
            actor.pause()  # accepted while the disk still has room; sent once it is full
            resp = await client.post(
                messages_path(),
                data={"From": f"whatsapp:{NUMBER}", "To": "whatsapp:+15551230000", "Body": "x"},
            )
            assert resp.status_code == 201
            disk = FailingCommits(daemon.store, monkeypatch)
            disk.error = OSError(errno.ENOSPC, "No space left on device")
            actor.resume()
            while not actor.storage_failing:  # noqa: ASYNC110 - the real clock: the send takes ms
                await trio.sleep(0.01)
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["numbers"][NUMBER] == "storage"
            assert health.json()["degraded"] == {NUMBER: "storage"}  # the code only, in public
            assert "details" not in health.json()  # the error text only for the admin
            assert daemon.supervisor.degraded() == {
                NUMBER: "storage: commit failed: [Errno 28] No space left on device"
            }
            samples = parse((await client.get("/metrics")).text)
            assert value(samples, "wadispatch_number_storage_failing", number=NUMBER) == 1
            assert value(samples, "wadispatch_unrecorded_outcomes", number=NUMBER) == 1
            assert value(samples, "wadispatch_store_failing", bucket="0") == 1
            await trio.sleep(1.0)  # a few retries fail
            disk.error = None
            await wait_status(client, resp.json()["sid"], "sent", "delivered", "read")
            assert [r.content for r in daemon.simulator.received(NUMBER)] == ["x"]
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["numbers"][NUMBER] == "running"
            samples = parse((await client.get("/metrics")).text)
            assert value(samples, "wadispatch_unrecorded_outcomes", number=NUMBER) == 0
            assert value(samples, "wadispatch_outcome_write_failures_total", number=NUMBER) >= 2
            assert value(samples, "wadispatch_store_failed_commits_total", bucket="0") >= 2


async def test_failing_commits_are_counted_and_logged_once_per_change_then_once_a_minute(
    writer: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FailingCommits(writer, monkeypatch)

    def put(txn: WriteTxn) -> None:
        txn.put(b"meta", b"k", b"v")

    disk.error = OSError(errno.EIO, "Input/output error")
    with structlog.testing.capture_logs() as logs:
        for _ in range(50):
            with pytest.raises(StoreError, match="Input/output error"):
                await writer.write(put)
        assert writer.statistics().failing and writer.statistics().failed_commits == 50
        monkeypatch.setattr(store_mod, "FAILING_LOG_EVERY", 0.0)
        with pytest.raises(StoreError):
            await writer.write(put)
        disk.error = None
        await writer.write(put)
    assert [e["event"] for e in logs] == ["store.commit_failed", "store.still_failing", "store.recovered"]
    assert logs[1]["failed_commits"] == 51 and "Input/output error" in logs[1]["error"]
    assert not writer.statistics().failing and writer.statistics().failed_commits == 51


def endpoint_config(endpoint: str) -> configuration.Config:
    """One number whose endpoint a reload can change (a change that replaces its actor)."""
    return fleet_config(NUMBER, drain=2.0, endpoints=[endpoint], rate=1000, burst=1000)


async def test_a_live_reload_while_storage_fails_hands_the_held_outcomes_to_the_new_actor(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    fleet = Fleet(
        buckets=as_buckets(writer),
        wall=wall,
        make_transport=lambda num, _url: InProcessTransport(sim, num.number),
    )
    first = endpoint_config("http://one.invalid")
    supervisor = Supervisor([fleet.build(n) for n in first.numbers])
    intake = intake_for_config(writer, supervisor, first, wall)
    await nursery.start(supervisor.run)
    old = supervisor.actor(NUMBER)
    assert old is not None
    disk = FailingCommits(writer, monkeypatch)
    records = [await submit(writer, None, f"+1555800{i:04d}", "once", number=NUMBER) for i in range(3)]
    disk.error = OSError(errno.ENOSPC, "No space left on device")
    for r in records:
        assert r.outbox_seq is not None
        old.notify(r.outbox_seq, r)
    await wait_for(lambda: old.statistics().unrecorded == 3)
    current = {"config": endpoint_config("http://two.invalid")}
    reloader = reloader_for(intake, supervisor, fleet, load=lambda: current["config"], config=first)
    result = await reloader()  # the old actor cannot record its outcomes: cancelled after 2 s
    assert result.ok and result.replaced == [NUMBER]
    new = supervisor.actor(NUMBER)
    assert new is not None and new is not old and new.unrecorded is old.unrecorded
    await trio.sleep(30)
    assert sum(delivered(sim).values()) == 3 and new.storage_failing
    disk.error = None
    await wait_for(lambda: all(record_of(writer, r.sid).status == "sent" for r in records))
    assert delivered(sim) == Counter({(f"1555800{i:04d}", "once"): 1 for i in range(3)})
    assert len(new.unrecorded) == 0


async def test_a_crash_while_storage_fails_with_nothing_held_still_resumes_sending(
    autojump_clock: trio.testing.MockClock,
    writer: Store,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restarted run finds storage marked failing: it probes it, rather than wait forever."""
    actor, api = on_fakes.cloud_actor(writer, limit=10)
    disk = FailingCommits(writer, monkeypatch)
    real_probe = recording._probe_write
    probes: list[str] = []

    def probe_crashing_once(number: str) -> Callable[[WriteTxn], None]:
        probes.append(number)
        if len(probes) > 1:
            return real_probe(number)  # type: ignore[return-value]

        def crash(txn: WriteTxn) -> None:
            raise RuntimeError("a bug while probing")

        return crash

    monkeypatch.setattr(recording, "_probe_write", probe_crashing_once)
    supervisor = Supervisor([actor], base_delay=0.1)
    await nursery.start(supervisor.run)
    record = await on_fakes.submit(writer, None, "15557000002")
    disk.error = OSError(errno.ENOSPC, "No space left on device")
    assert record.outbox_seq is not None
    actor.notify(record.outbox_seq, record)
    await wait_for(lambda: actor.storage_failing)
    disk.error = None  # the next probe reaches the write, which crashes the actor
    await wait_for(lambda: supervisor.restarts(NUMBER) == 1)
    await wait_for(lambda: record_of(writer, record.sid).status == "sent", timeout=120)
    assert len(api.sent) == 1 and not actor.storage_failing and len(probes) == 2


async def test_outcomes_still_unrecorded_at_shutdown_are_logged_with_their_sids(writer: Store) -> None:
    """The documented at-least-once case: the drain ended while storage still failed."""
    wall = TrioWallClock(start=WALL_START)
    sim = sim_with(wall, NUMBER)
    fleet = Fleet(
        buckets=as_buckets(writer),
        wall=wall,
        make_transport=lambda num, _url: InProcessTransport(sim, num.number),
    )
    config = endpoint_config("http://one.invalid")
    actor = fleet.build(config.numbers[0])
    assert fleet.build(config.numbers[0]).unrecorded is actor.unrecorded  # one holder per number
    actor.unrecorded.begin(7, ledger.drop_entry(NUMBER, 7))
    actor.unrecorded.stall(7, "SM" + "7" * 32)
    with structlog.testing.capture_logs() as logs:
        await fleet.aclose()
    [lost] = [e for e in logs if e["event"] == "daemon.outcomes_unrecorded"]
    assert (lost["number"], lost["count"], lost["sids"]) == (NUMBER, 1, ["SM" + "7" * 32])


def test_wadispatch_status_shows_a_number_waiting_for_storage() -> None:
    number = NumberStatus(
        number=NUMBER,
        account=ACCOUNT,
        state="storage",
        outbox=12,
        in_flight=0,
        rate=20.0,
        burst=60,
        sent=5,
        failed=0,
        retries=0,
        rate_limited=0,
        restarts=0,
        token_expires_in=None,
        storage="storage is full",
        unrecorded=3,
    )
    table = admincli._status_table(Status(numbers=[number], store_commits=1, store_queued=0))
    console = Console(width=300, record=True)
    console.print(table)
    assert "storage (3 unrecorded: storage is full)" in console.export_text()
