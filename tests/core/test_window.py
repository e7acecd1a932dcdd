from __future__ import annotations

from dispatcher.core import window
from dispatcher.core.store import Store, WriteTxn


async def test_window_opens_on_inbound_and_closes_after_24_hours(writer: Store) -> None:
    number, customer = "+15550000001", "+15551234567"
    assert not window.is_open(writer, number, customer, 1000.0)

    def touch(at: float):
        def fn(txn: WriteTxn) -> None:
            window.touch(txn, number, customer, at)

        return fn

    await writer.write(touch(1000.0))
    await writer.write(touch(500.0))  # a late, older webhook never moves it back
    assert window.last_inbound(writer, number, customer) == 1000.0
    assert window.is_open(writer, number, customer, 1000.0 + 23 * 3600 + 59 * 60)
    assert not window.is_open(writer, number, customer, 1000.0 + 24 * 3600 + 60)
    assert not window.is_open(writer, "+15550000002", customer, 1000.0)  # per sender number
