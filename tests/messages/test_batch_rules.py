"""The batch route's validation (``CreateRules.validate_plain``) against the create's (``validate``).

The batch works out once per batch what every item shares (sender, callback
syntax, sids) and builds records directly; these tests hold it to exactly the
single create's outcome, item by item: the same error (status, code, message)
or the same record.
"""

from __future__ import annotations

from typing import Final

import msgspec
import pytest

from actors.supervisor import Supervisor
from dispatcher.core import window
from dispatcher.core.directory import NumberInfo
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store
from dispatcher.core.template_file import Template
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor.batch import BatchItem
from dispatcher.messages import rules as rules_module
from dispatcher.messages.rules import SendRequest
from dispatcher.messages.templates import TemplateRegistry
from tests.helpers.intake import Intake, build_intake

ACCOUNT: Final = "AC" + "0" * 31 + "1"
OTHER: Final = "AC" + "0" * 31 + "2"
OPEN, WINDOWED, FOREIGN, DRAINED = "+15550000001", "+15550000002", "+15550000003", "+15550000004"
FRIEND = "+15551230000"  # wrote to WINDOWED an hour ago
NOW: Final = 1_800_000_000.0


class Fixed:
    def now(self) -> float:
        return NOW


def wa(number: str) -> str:
    return "whatsapp:" + number


@pytest.fixture
async def intake(writer: Store) -> Intake:
    numbers = {
        OPEN: NumberInfo(OPEN, ACCOUNT, "s", status_callback="https://numbers.example/cb"),
        WINDOWED: NumberInfo(WINDOWED, ACCOUNT, "s", enforce_window=True),
        FOREIGN: NumberInfo(FOREIGN, OTHER, "s"),
        DRAINED: NumberInfo(DRAINED, ACCOUNT, "s"),
    }
    otp = Template(
        sid="HX" + "0" * 31 + "1",
        account=ACCOUNT,
        namespace="ns",
        name="otp",
        language="en",
        body="Code {{1}}",
    )
    parts = build_intake(
        writer,
        supervisor=Supervisor([]),
        accounts={ACCOUNT: "t", OTHER: "u"},
        numbers=numbers,
        wall=Fixed(),
        templates=TemplateRegistry(writer, [otp]),
        max_body_chars=9000,
    )
    parts.draining.add(DRAINED)
    await writer.write(lambda txn: window.touch(txn, WINDOWED, FRIEND, NOW - 3600))
    return parts


LONG_HOST_CB: Final = "http://" + "a" * 600 + ".example.com/cb"
ITEMS: Final = [
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="hello"),
    BatchItem(to=None, from_=wa(OPEN), body="no to"),
    BatchItem(to="", from_=wa(OPEN), body="empty to"),
    BatchItem(to="whatsapp:555", from_=wa(OPEN), body="bad to"),
    BatchItem(to=" +15551234567 ", from_=wa(OPEN), body="bare, padded to"),
    BatchItem(to=wa("+15551234567"), from_=None, body="no from"),
    BatchItem(to=wa("+15551234567"), from_="whatsapp:+0123", body="bad from"),
    BatchItem(to=wa("+15551234567"), from_=wa("+15559999999"), body="unknown from"),
    BatchItem(to=wa("+15551234567"), from_=wa("+15559999999"), body="unknown from again"),
    BatchItem(to=wa("+15551234567"), from_=wa(FOREIGN), body="another account's number"),
    BatchItem(to=wa("+15551234567"), from_=wa(DRAINED), body="drained"),
    BatchItem(to=wa(OPEN), from_=wa(OPEN), body="to itself"),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body=None),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body=""),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="x" * 9001),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="long " * 1000),  # 2 parts
    BatchItem(to=wa("+15551234567"), from_=wa(WINDOWED), body="window closed"),
    BatchItem(to=wa(FRIEND), from_=wa(WINDOWED), body="window open"),
    BatchItem(to=wa("+15551234567"), from_=wa(WINDOWED), body="Code 1234"),  # a template: no window
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="cb", status_callback="https://c.example/s"),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="cb again", status_callback="https://c.example/s"),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="bad cb", status_callback="ftp://c.example/s"),
    BatchItem(
        to=wa("+15551234567"), from_=wa(OPEN), body="bad cb again", status_callback="ftp://c.example/s"
    ),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="empty cb", status_callback=""),
    # Accepted means storable and sendable (issue 12): what a create refuses, an item is refused.
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body=" \n\t "),  # blank: 21602
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="x" * 4096 + "  "),  # one part, sent as 4096
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="long host", status_callback=LONG_HOST_CB),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="long host again", status_callback=LONG_HOST_CB),
    BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="_", status_callback="https://my_host.example/cb"),
    BatchItem(to=wa("+15551234567"), from_=wa(WINDOWED), body="Code 12     34"),  # no template: 63016
]


def outcome(result: MessageRecord | TwilioError) -> object:
    """What the answer and the store see: the error, or every record field but the random sid."""
    if isinstance(result, TwilioError):
        return (result.status, result.code, result.message)
    fields = msgspec.structs.asdict(result)
    sid = fields.pop("sid")
    return (sid[:2], len(sid), fields)


def single(intake: Intake, item: BatchItem) -> object:
    req = SendRequest(to=item.to, from_=item.from_, body=item.body, status_callback=item.status_callback)
    try:
        return outcome(intake.rules.validate(ACCOUNT, req))
    except TwilioError as exc:
        return outcome(exc)


async def test_each_item_is_judged_like_a_single_create(intake: Intake) -> None:
    expected = [single(intake, item) for item in ITEMS]
    # One batch, so the per-batch lookups (a repeated From or StatusCallback) are exercised too.
    assert [outcome(r) for r in intake.rules.validate_plain(ACCOUNT, ITEMS)] == expected
    # Alone and in the reverse order: nothing carries over from earlier items.
    assert [outcome(intake.rules.validate_plain(ACCOUNT, [item])[0]) for item in ITEMS] == expected
    reverse = [outcome(r) for r in intake.rules.validate_plain(ACCOUNT, ITEMS[::-1])]
    assert reverse == expected[::-1]
    kinds = [e[0] for e in expected]
    assert kinds.count("SM") == 9 and 400 in kinds and 503 in kinds  # every branch taken
    assert expected[15][2]["parts"] == 2 and expected[18][2]["template"] is not None
    codes = ["accepted" if e[0] == "SM" else e[1] for e in expected[24:]]
    assert codes == [21602, "accepted", 21609, 21609, 21609, 63016]
    assert expected[25][2]["parts"] == 1 and expected[25][2]["num_segments"] == 1


async def test_sids_are_fresh_per_item(intake: Intake) -> None:
    items = [BatchItem(to=wa(f"+1555123{i:04d}"), from_=wa(OPEN), body="m") for i in range(1500)]
    records = intake.rules.validate_plain(ACCOUNT, items)
    sids = {r.sid for r in records if isinstance(r, MessageRecord)}
    assert len(sids) == 1500 and all(len(s) == 34 and s.startswith("SM") for s in sids)


async def test_a_sender_drained_between_batches_is_refused(intake: Intake) -> None:
    item = BatchItem(to=wa("+15551234567"), from_=wa(OPEN), body="hi")
    assert isinstance(intake.rules.validate_plain(ACCOUNT, [item])[0], MessageRecord)
    intake.draining.add(OPEN)
    refused = intake.rules.validate_plain(ACCOUNT, [item])[0]
    assert isinstance(refused, TwilioError) and refused.code == 20503


async def test_remembered_addresses_stay_bounded_and_bad_ones_still_fail(intake: Intake) -> None:
    items = [
        BatchItem(to=wa(f"+1556{i:07d}"), from_=wa(OPEN), body="m")
        for i in range(rules_module._ADDRESS_CACHE + 10)
    ]
    assert all(isinstance(r, MessageRecord) for r in intake.rules.validate_plain(ACCOUNT, items))
    assert 0 < len(intake.rules._addresses) <= rules_module._ADDRESS_CACHE
    bad = BatchItem(to="whatsapp:+1", from_=wa(OPEN), body="m")
    for _ in range(2):  # an invalid address is never remembered
        refused = intake.rules.validate_plain(ACCOUNT, [bad])[0]
        assert isinstance(refused, TwilioError) and refused.code == 21211
