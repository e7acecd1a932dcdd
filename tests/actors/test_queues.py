"""SendQueues on its own: order per recipient, the ready line, parked wake-ups, each recipient's
share of the window, bounded buffers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.queues import Pending, SendQueues


def item(seq: int, to: str) -> Pending:
    return Pending(seq, f"SM{seq}", to)


def drain(queues: SendQueues) -> list[tuple[str, int]]:
    """Send everything in the order the queues allow, one send at a time."""
    order = []
    while queues.has_ready():
        recipient = queues.pop_ready()
        order.append((recipient, queues.begin(recipient).seq))
        queues.done(recipient)
    return order


def test_each_recipient_in_acceptance_order_and_recipients_take_turns() -> None:
    queues = SendQueues()
    for seq, to in enumerate(["a", "a", "b", "a", "c", "b"], start=1):
        queues.add(item(seq, to))
    assert drain(queues) == [("a", 1), ("b", 3), ("c", 5), ("a", 2), ("b", 6), ("a", 4)]
    assert not queues and queues.loaded() == 0


def test_a_recipient_is_ready_once_and_never_while_its_send_is_in_flight() -> None:
    queues = SendQueues()
    assert queues.add(item(1, "a"))  # became ready
    assert not queues.add(item(2, "a"))  # already ready: not twice on the line
    assert queues.ready() == ("a",)
    recipient = queues.pop_ready()
    assert queues.begin(recipient).seq == 1
    assert not queues.add(item(3, "a"))  # busy: waits for its head message
    assert not queues.has_ready() and queues.in_flight() == 1
    assert queues.done("a")  # more queued: ready again
    assert queues.ready() == ("a",) and queues.in_flight() == 0 and queues.loaded() == 2


def test_one_recipient_takes_its_share_of_the_window_then_waits_on_disk() -> None:
    queues = SendQueues(window=16, per_recipient=2)
    assert queues.offer(item(1, "a")) and not queues.offer(item(2, "a"))
    assert not queues.offer(item(3, "a"))  # a has its share: deferred from seq 3 on
    assert queues.deferred("a") == 3 and queues.loaded() == 2 and queues.room() == 14
    assert not queues.offer(item(4, "a"))  # still deferred: its cursor stays at its first left behind
    assert queues.offer(item(5, "b"))  # others load
    assert queues.deferred("a") == 3 and queues.deferred("b") is None
    assert drain(queues) == [("a", 1), ("b", 5), ("a", 2)]
    assert queues.starved() and queues.take_starved() == ["a"]  # nothing of a loaded: refill it
    queues.refilled("a", [item(3, "a"), item(4, "a")], None)
    assert queues.deferred("a") is None and drain(queues) == [("a", 3), ("a", 4)]


def test_a_parked_recipient_keeps_only_its_head_in_the_window() -> None:
    queues = SendQueues(window=16, per_recipient=8)
    for seq in range(1, 6):
        queues.offer(item(seq, "a"))
    queues.offer(item(6, "b"))
    queues.park(queues.pop_ready(), 10.0)  # a waits (pair rate): 2..5 go back to disk
    assert queues.queued("a") == (1,) and queues.deferred("a") == 2 and queues.loaded() == 2
    assert not queues.offer(item(7, "a"))  # behind what is on disk
    assert drain(queues) == [("b", 6)]
    queues.unpark_due(10.0)
    assert drain(queues) == [("a", 1)] and queues.take_starved() == ["a"]


def test_a_parked_recipient_with_one_message_loaded_takes_no_more_while_it_waits() -> None:
    queues = SendQueues(window=16, per_recipient=8)
    queues.offer(item(1, "a"))
    queues.park(queues.pop_ready(), 10.0)
    assert not queues.offer(item(2, "a")) and queues.queued("a") == (1,)  # stays on disk
    assert queues.deferred("a") == 2
    queues.unpark_due(10.0)
    assert drain(queues) == [("a", 1)] and queues.take_starved() == ["a"]


def test_a_window_smaller_than_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^window must be at least 16, not 8$"):
        SendQueues(window=8)


def test_parked_recipients_wake_at_their_time_earliest_first() -> None:
    queues = SendQueues()
    for seq, to in enumerate(["a", "b", "c"], start=1):
        queues.add(item(seq, to))
    queues.park(queues.pop_ready(), 30.0)  # a
    queues.park(queues.pop_ready(), 10.0)  # b
    queues.park(queues.pop_ready(), 10.0)  # c: same time as b, after it
    assert queues.parked() == 3 and not queues.has_ready() and queues.next_unpark() == 10.0
    assert not queues.unpark_due(9.9)  # nothing ready yet
    assert queues.unpark_due(10.0)
    assert queues.ready() == ("b", "c") and queues.next_unpark() == 30.0
    queues.unpark_due(100.0)
    assert queues.ready() == ("b", "c", "a") and queues.next_unpark() == math.inf
    assert queues.parked() == 0


def test_a_message_sent_again_later_keeps_its_place_at_the_head() -> None:
    queues = SendQueues()
    queues.offer(item(1, "a"))
    queues.offer(item(2, "a"))
    queues.begin(queues.pop_ready())
    queues.retry_at("a", 5.0)  # the head goes again at 5; 2 waits on disk meanwhile
    assert not queues.offer(item(3, "a")) and not queues.has_ready()
    assert queues.in_flight() == 0 and queues.parked() == 1 and queues.deferred("a") == 2
    queues.unpark_due(5.0)
    assert drain(queues) == [("a", 1)]
    assert queues.take_starved() == ["a"]
    queues.refilled("a", [item(2, "a"), item(3, "a")], None)
    assert drain(queues) == [("a", 2), ("a", 3)]


def test_idle_queues_hold_no_buffers() -> None:
    queues = SendQueues()
    assert queues.buffers() == 0  # a new actor's queues: nothing made yet
    queues.add(item(1, "a"))
    queues.add(item(2, "b"))
    assert queues.buffers() == 1  # the ready line
    assert drain(queues) == [("a", 1), ("b", 2)]
    assert queues.buffers() == 2
    queues.release()
    assert queues.buffers() == 0 and not queues


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.booleans(), st.floats(0.0, 5.0)),
        min_size=1,
        max_size=60,
    )
)
def test_any_schedule_sends_each_message_once_in_order_per_recipient(
    steps: list[tuple[str, bool, float]],
) -> None:
    """Whatever parks and retries happen, each recipient's messages go out in acceptance order,
    each once, with at most one in flight per recipient; the ready line never holds a
    recipient twice, and the buffers go once everything is sent. What the window does not
    hold (a recipient's share, a parked recipient's later messages) is refilled as the
    backlog does: a starved recipient's next messages, from its cursor on."""
    queues = SendQueues(window=16, per_recipient=3)
    accepted: dict[str, list[int]] = {}
    for seq, (to, _, _) in enumerate(steps, start=1):
        queues.offer(item(seq, to))
        accepted.setdefault(to, []).append(seq)
    sent: dict[str, list[int]] = {}
    now, step = 0.0, 0
    while queues or queues.starved():
        for recipient in queues.take_starved():
            cursor = queues.deferred(recipient)
            assert cursor is not None
            done = set(sent.get(recipient, ()))
            left = [seq for seq in accepted[recipient] if seq >= cursor and seq not in done]
            assert all(seq not in done for seq in accepted[recipient] if seq >= cursor)  # none ahead
            take, rest = left[: queues.per_recipient], left[queues.per_recipient :]
            queues.refilled(recipient, [item(seq, recipient) for seq in take], rest[0] if rest else None)
        assert queues.loaded() <= queues.window
        if not queues:
            continue  # its refill found nothing left of it
        queues.unpark_due(now)
        ready = tuple(queues.ready())
        assert len(ready) == len(set(ready))
        if not queues.has_ready():
            now = queues.next_unpark()
            assert now < math.inf  # something queued is ready, parked or in flight: never lost
            continue
        recipient = queues.pop_ready()
        head = queues.begin(recipient)
        _, again, delay = steps[step % len(steps)]
        step += 1
        if again and head.attempts < 2:
            head.attempts += 1
            queues.retry_at(recipient, now + delay)
        else:
            sent.setdefault(recipient, []).append(head.seq)
            queues.done(recipient)
    assert sent == accepted
    queues.release()
    assert queues.buffers() == 0
