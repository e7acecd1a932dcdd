"""A batch's one write (``intake_many``, ``ledger.accept_many``) stores what a write per message would."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from actors.supervisor import Supervisor
from dispatcher.core import ledger, models
from dispatcher.core.clock import SystemWallClock
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import MessageRecord, new_sid, new_sids, record_decoder, record_encoder
from dispatcher.core.store import DB_NAMES, Store
from dispatcher.messages.gateway import Gateway
from tests.helpers.intake import build_intake

ACCOUNT = "AC" + "0" * 31 + "1"
NUMBERS = ("+15550000001", "+15550000002")


def records() -> list[MessageRecord]:
    """Fresh copies (a write sets ``outbox_seq``): two numbers, one message of three parts."""
    out = [
        MessageRecord(
            sid=f"SM{i:032x}",
            account_sid=ACCOUNT,
            from_number=NUMBERS[i % 2],
            to_number=f"+1555123{i:04d}",
            body=f"m{i}",
            date_created=1_800_000_000.0 + i / 1000,
            parts=3 if i == 4 else 1,
        )
        for i in range(10)
    ]
    out[7].status, out[7].send_at, out[7].messaging_service_sid = (
        "scheduled",
        1_900_000_000.0,
        "MG" + "1" * 32,
    )
    out[8].messaging_service_sid = "MG" + "1" * 32
    return out


def dump(store: Store) -> dict[bytes, list[tuple[bytes, bytes]]]:
    return {name: list(store.scan(name, b"")) for name in DB_NAMES}


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "other", map_size=64 << 20, commit_in_thread=False)
    yield s
    s.close_env()


def gateway(store: Store, supervisor: object = None) -> Gateway:
    """``supervisor``: a stand-in whose actors record their notifications (default: no actors)."""
    numbers = {n: NumberInfo(number=n, account_sid=ACCOUNT, webhook_secret="s") for n in NUMBERS}
    return build_intake(
        store,
        supervisor=supervisor if supervisor is not None else Supervisor([]),
        accounts={ACCOUNT: "t"},
        numbers=numbers,
        wall=SystemWallClock(),
    ).gateway


async def test_accept_many_writes_what_accept_writes(
    writer: Store, other: Store, nursery: trio.Nursery
) -> None:
    await nursery.start(other.run_writer)
    plain = [r for r in records() if r.status == "queued" and r.messaging_service_sid is None]
    one_by_one = [await writer.write(ledger.accept(r)) for r in plain]
    together = records()
    together = [r for r in together if r.status == "queued" and r.messaging_service_sid is None]
    assert await other.write(ledger.accept_many(together)) == one_by_one
    assert [r.outbox_seq for r in together] == one_by_one == [1, 1, 2, 2, 3, 3, 6, 4]
    assert dump(other) == dump(writer)


async def test_intake_many_writes_what_intake_writes(
    writer: Store, other: Store, nursery: trio.Nursery
) -> None:
    await nursery.start(other.run_writer)
    single, many = gateway(writer), gateway(other)
    one_by_one = [await writer.write(single.intake(r)) for r in records()]
    assert await other.write(many.intake_many(records())) == one_by_one
    assert one_by_one[7] == 0  # scheduled: no outbox entry
    assert dump(other) == dump(writer)


async def test_a_batch_with_an_existing_sid_writes_nothing(writer: Store) -> None:
    await writer.write(ledger.accept(records()[3]))
    before = dump(writer)
    with pytest.raises(KeyError):
        await writer.write(ledger.accept_many(records()[:5]))
    assert dump(writer) == before


class Recorder:
    """Stands in for the supervisor: every number's actor records its notifications."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str, int]] = []

    def actor(self, number: str) -> Recorder.Actor:
        return Recorder.Actor(self.seen, number)

    class Actor:
        def __init__(self, seen: list[tuple[str, int, str, int]], number: str) -> None:
            self.seen, self.number = seen, number

        def notify(self, seq: int, record: MessageRecord, part: int = 0) -> None:
            self.seen.append((self.number, seq, record.sid, part))


async def test_handoff_many_wakes_what_handoff_wakes(writer: Store) -> None:
    one, many = Recorder(), Recorder()
    gw = gateway(writer, one)
    batch = records()
    seqs = await writer.write(gw.intake_many(batch))
    for seq, record in zip(seqs, batch, strict=True):
        gw.handoff(seq, record)
    gateway(writer, many).handoff_many(seqs, batch)
    assert many.seen == one.seen and len(one.seen) == 9 + 2  # the scheduled one waits, 3 parts


def test_records_stay_out_of_the_cyclic_gc() -> None:
    """Every queued message holds its record: the collector's full scans skip them."""
    record = records()[0]
    assert not gc.is_tracked(record)
    assert not gc.is_tracked(record_decoder.decode(record_encoder.encode(record)))


def test_sids_start_with_their_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """So the records of one commit sit side by side in the sid-keyed messages DB."""
    ms = 1_800_000_000_123
    monkeypatch.setattr(models.time, "time_ns", lambda: ms * 1_000_000)
    one, batch = new_sid("MM", 0xBEEF), new_sids("SM", [0xBEEF] * 3000)
    assert one.startswith(f"MM{ms:012x}beef") and all(s.startswith(f"SM{ms:012x}beef") for s in batch)
    assert len(set(batch)) == 3000 and all(len(s) == 34 and int(s[2:], 16) >= 0 for s in batch)
    monkeypatch.setattr(models.time, "time_ns", lambda: (ms + 1) * 1_000_000)
    assert new_sid("SM", 0) > max(batch)
