"""The messaging tier budget: unique business-initiated recipients per rolling 24 h, durable."""

from __future__ import annotations

import pytest

from actors.pacing.tier import WINDOW, TierBudget
from dispatcher.core import window
from dispatcher.core.store import Store

NUMBER = "+15550000001"
T0 = 1_700_000_000.0


async def admit(store: Store, budget: TierBudget, recipient: str, now: float) -> float:
    admission = budget.admit(recipient, now)
    if admission.new:
        await store.write(budget.persist(recipient))
    return admission.wait


async def test_new_recipients_beyond_the_limit_wait_for_the_window(writer: Store) -> None:
    budget = TierBudget(writer, NUMBER, 2)
    assert await admit(writer, budget, "+1a", T0) == 0
    assert await admit(writer, budget, "+1b", T0 + 100) == 0
    assert await admit(writer, budget, "+1a", T0 + 200) == 0  # counted already: free
    assert await admit(writer, budget, "+1c", T0 + 300) == pytest.approx(WINDOW - 300)
    assert budget.waits == 1 and budget.used == 2
    # +1a's count leaves the window: room for one more.
    assert await admit(writer, budget, "+1c", T0 + WINDOW) == 0
    assert await admit(writer, budget, "+1d", T0 + WINDOW) == pytest.approx(100)


async def test_replies_inside_the_service_window_are_free(writer: Store) -> None:
    await writer.write(lambda txn: window.touch(txn, NUMBER, "+1talker", T0))
    budget = TierBudget(writer, NUMBER, 1)
    assert await admit(writer, budget, "+1talker", T0 + 60) == 0
    assert budget.used == 0
    assert await admit(writer, budget, "+1cold", T0 + 60) == 0
    assert await admit(writer, budget, "+1colder", T0 + 60) > 0


async def test_counts_survive_a_restart_and_expired_ones_are_dropped(writer: Store) -> None:
    budget = TierBudget(writer, NUMBER, 2)
    await admit(writer, budget, "+1a", T0)
    await admit(writer, budget, "+1b", T0 + 10)
    again = TierBudget(writer, NUMBER, 2)
    assert again.load(T0 + 20) == 2
    assert again.admit("+1c", T0 + 20).wait == pytest.approx(WINDOW - 20)
    later = TierBudget(writer, NUMBER, 2)
    assert later.load(T0 + WINDOW + 5) == 1  # +1a expired
    assert await admit(writer, later, "+1c", T0 + WINDOW + 5) == 0  # also deletes +1a's row
    assert writer.count(b"tier", NUMBER.encode() + b"\x00") == 2


async def test_numbers_have_separate_budgets(writer: Store) -> None:
    one = TierBudget(writer, NUMBER, 1)
    other = TierBudget(writer, "+15550000002", 1)
    assert await admit(writer, one, "+1a", T0) == 0
    assert await admit(writer, other, "+1a", T0) == 0
    assert TierBudget(writer, "+15550000002", 1).load(T0) == 1


async def test_unlimited_counts_nothing(writer: Store) -> None:
    budget = TierBudget(writer, NUMBER, None)
    for i in range(1000):
        assert budget.admit(f"+1{i}", T0).wait == 0
    assert budget.used == 0
