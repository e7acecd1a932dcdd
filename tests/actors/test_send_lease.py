"""The send gate: an actor starts no send once its lease's ``send_until`` has passed."""

from __future__ import annotations

import functools
import math
from typing import final

import trio
import trio.testing

from dispatcher.core.store import Store, number_key
from tests.helpers import messages
from tests.helpers.actors import NUMBER, onprem_actor, submit
from tests.helpers.fakes import error
from tests.helpers.messages import record_of

wait_for = functools.partial(messages.wait_for, timeout=600.0)


@final
class ManualLease:
    """A lease the test renews by hand: sends may start until ``until``."""

    def __init__(self, until: float) -> None:
        self.until = until
        self._renewed = trio.Event()
        self.asked = 0

    def send_until(self) -> float:
        self.asked += 1
        return self.until

    async def wait_open(self) -> None:
        while trio.current_time() >= self.until:
            await self._renewed.wait()

    def renew(self, until: float) -> None:
        self.until = until
        self._renewed.set()
        self._renewed = trio.Event()


async def test_no_send_starts_after_send_until_and_sends_resume_once_renewed(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    lease = ManualLease(until=10.0)
    actor, api, _ = onprem_actor(writer, lease=lease)
    await nursery.start(actor.run)
    first = await submit(writer, actor, "+15551230000", "before")
    await wait_for(lambda: record_of(writer, first.sid).status == "sent")
    await trio.sleep_until(10.0)
    held = await submit(writer, actor, "+15551230001", "held")
    await trio.sleep(30.0)
    assert [body for *_, body in api.sent] == ["before"]
    assert actor.counts.lease_waits == 1
    lease.renew(100.0)
    await wait_for(lambda: record_of(writer, held.sid).status == "sent")
    assert trio.current_time() < 40.1  # at once, not after a poll


async def test_every_attempt_asks_the_lease_a_retry_too(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    lease = ManualLease(until=math.inf)
    actor, api, _ = onprem_actor(writer, lease=lease)
    api.script = lambda msg, n: error(503, 1, "Service unavailable") if n == 1 else None
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551230000", "hello")
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert len(api.attempts) == 2
    assert lease.asked == 2


async def test_stop_while_waiting_for_the_lease_keeps_the_message_in_the_outbox(
    autojump_clock: trio.testing.MockClock, writer: Store
) -> None:
    lease = ManualLease(until=0.0)  # lapsed from the start: the bucket is going elsewhere
    actor, api, _ = onprem_actor(writer, lease=lease)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        record = await submit(writer, actor, "+15551230000", "kept")
        await trio.sleep(5.0)
        actor.stop()
    assert api.sent == []
    assert record_of(writer, record.sid).status == "queued"
    assert writer.count(b"outbox", number_key(NUMBER)) == 1
