"""Cancel, redact and delete against a real actor and LMDB under MockClock: nothing canceled is ever sent."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.supervisor import Supervisor
from dispatcher.core import ledger
from dispatcher.core.directory import NumberInfo
from dispatcher.core.store import Store, number_key
from dispatcher.core.twilio import TwilioError
from dispatcher.messages.edits import Edits
from tests.helpers.actors import ACCOUNT, NUMBER, onprem_actor, submit
from tests.helpers.intake import build_intake
from tests.helpers.messages import record_of, wait_for

OTHER = "AC" + "1" * 32


def edits_for(store: Store, actor, wall) -> Edits:
    return build_intake(
        store,
        supervisor=Supervisor([actor]),
        accounts={ACCOUNT: "token", OTHER: "other"},
        numbers={NUMBER: NumberInfo(number=NUMBER, account_sid=ACCOUNT, webhook_secret="s")},
        wall=wall,
    ).edits


async def expect(code: int, coro) -> TwilioError:
    with pytest.raises(TwilioError) as info:
        await coro
    assert info.value.code == code
    return info.value


async def test_a_queued_message_is_canceled_and_never_sent(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, wall = onprem_actor(writer, latency=1.0)
    edits = edits_for(writer, actor, wall)
    await nursery.start(actor.run)
    first = await submit(writer, actor, "+15551234567", "first")
    second = await submit(writer, actor, "+15551234567", "second")  # waits behind the first
    await wait_for(lambda: api.in_flight == 1)
    canceled = await edits.update(ACCOUNT, second.sid, {"Status": ["canceled"]})
    assert canceled.status == "canceled" and canceled.outbox_seq is None
    assert record_of(writer, second.sid).status == "canceled"
    # Canceling again is harmless and changes nothing.
    assert (await edits.cancel(ACCOUNT, second.sid)).date_updated == canceled.date_updated
    await wait_for(lambda: record_of(writer, first.sid).status == "sent")
    await trio.sleep(60)
    assert [body for _, _, body in api.sent] == ["first"]
    assert writer.count(b"outbox", number_key(NUMBER)) == 0
    # Sent: too late to cancel.
    error = await expect(30409, edits.cancel(ACCOUNT, first.sid))
    assert error.status == 400 and "sent" in error.message


async def test_a_message_whose_send_has_started_cannot_be_canceled(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, wall = onprem_actor(writer, latency=5.0)
    edits = edits_for(writer, actor, wall)
    await nursery.start(actor.run)
    record = await submit(writer, actor, "+15551234567", "on the wire")
    await wait_for(lambda: api.in_flight == 1)
    await expect(30409, edits.cancel(ACCOUNT, record.sid))
    await wait_for(lambda: record_of(writer, record.sid).status == "sent")
    assert [body for _, _, body in api.sent] == ["on the wire"]


async def test_the_actor_waits_for_a_cancel_being_committed_then_drops_the_message(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, wall = onprem_actor(writer)
    record = await submit(writer, None, "+15551234567", "held")
    assert actor.holds.try_hold(record.sid)  # a cancel decided, its write not yet committed
    await nursery.start(actor.run)
    await trio.sleep(10)
    assert api.sent == [] and actor.holds.sending(record.sid) is False
    await writer.write(ledger.cancel(record.sid, ACCOUNT, wall.now()))
    actor.holds.release(record.sid)
    await trio.sleep(10)
    assert api.sent == [] and record_of(writer, record.sid).status == "canceled"
    assert actor.statistics().pending == 0


async def test_a_released_hold_whose_cancel_failed_lets_the_message_go(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, _ = onprem_actor(writer)
    record = await submit(writer, None, "+15551234567", "goes")
    assert actor.holds.try_hold(record.sid)
    assert actor.holds.try_hold(record.sid)  # two cancels at once: both must let go
    await nursery.start(actor.run)
    await trio.sleep(1)
    actor.holds.release(record.sid)
    await trio.sleep(1)
    assert api.sent == []
    actor.holds.release(record.sid)
    await wait_for(lambda: len(api.sent) == 1)
    assert record_of(writer, record.sid).status == "sent"


async def test_update_parameters_follow_twilio_rules(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, _, wall = onprem_actor(writer)
    edits = edits_for(writer, actor, wall)
    record = await submit(writer, None, "+15551234567", "secret code 1234")  # actor not running: stays queued
    for params in [
        {},
        {"Status": ["sent"]},
        {"Status": ["canceled"], "Body": [""]},
        {"Body": ["new text"]},
        {"Body": [""]},  # still queued: nothing to redact yet
    ]:
        error = await expect(30400, edits.update(ACCOUNT, record.sid, params))
        assert error.status == 400
    assert record_of(writer, record.sid).body == "secret code 1234"
    await expect(20404, edits.update(OTHER, record.sid, {"Status": ["canceled"]}))
    await expect(20404, edits.update(ACCOUNT, "SM" + "f" * 32, {"Status": ["canceled"]}))
    assert record_of(writer, record.sid).status == "queued"


async def test_redact_and_delete_once_finished(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, wall = onprem_actor(writer)
    edits = edits_for(writer, actor, wall)
    queued = await submit(writer, None, "+15551234567", "code 1234")
    error = await expect(20009, edits.delete(ACCOUNT, queued.sid))
    assert error.status == 409
    await nursery.start(actor.run)
    await wait_for(lambda: record_of(writer, queued.sid).status == "sent")
    redacted = await edits.update(ACCOUNT, queued.sid, {"Body": [""]})
    assert redacted.body == "" and record_of(writer, queued.sid).body == ""
    await expect(20404, edits.delete(OTHER, queued.sid))
    await edits.delete(ACCOUNT, queued.sid)
    assert writer.get(b"messages", ledger.sid_key(queued.sid)) is None
    assert writer.count(b"by_account", ACCOUNT.encode()) == 0
    await expect(20404, edits.delete(ACCOUNT, queued.sid))
    # A late status for the deleted message finds nothing and parks nothing.
    channel_id = "wamid1"
    outcome = await writer.write(ledger.apply_status(NUMBER, channel_id, "delivered", None, None, wall.now()))
    assert outcome == ("gone", None)
    assert writer.get(b"meta", b"orphan\x00" + channel_id.encode()) is None
    assert api.sent[0][2] == "code 1234"


async def test_a_cancel_survives_a_restart_and_recovery_skips_it(
    autojump_clock: trio.testing.MockClock, writer: Store, nursery: trio.Nursery
) -> None:
    actor, api, wall = onprem_actor(writer)
    edits = edits_for(writer, actor, wall)
    kept = await submit(writer, None, "+15551234567", "kept")
    dropped = await submit(writer, None, "+15551234567", "dropped")
    await edits.cancel(ACCOUNT, dropped.sid)  # the actor is not running: no hold needed
    await nursery.start(actor.run)  # recovery reads the outbox
    await wait_for(lambda: len(api.sent) == 1)
    await trio.sleep(60)
    assert [body for _, _, body in api.sent] == ["kept"]
    assert record_of(writer, kept.sid).status == "sent"
    assert record_of(writer, dropped.sid).status == "canceled"
