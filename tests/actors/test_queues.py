"""SendQueues on its own: order per recipient, the ready line, parked wake-ups, bounded buffers."""

from __future__ import annotations

import math

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
    assert not queues and queues.pending() == 0


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
    assert queues.ready() == ("a",) and queues.in_flight() == 0 and queues.pending() == 2


def test_a_seq_is_queued_once_and_recovery_ignores_what_it_already_saw() -> None:
    queues = SendQueues()
    queues.add(item(5, "a"))
    queues.add(item(7, "b"))
    queues.recovered()
    assert not queues.add(item(5, "a"))  # a notify for a recovered message
    assert not queues.add(item(6, "c"))  # at or below the last recovered seq: sent or queued already
    assert queues.add(item(8, "c"))
    assert not queues.add(item(8, "c"))  # the same seq twice
    assert queues.pending() == 3


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
    queues.add(item(1, "a"))
    queues.add(item(2, "a"))
    queues.begin(queues.pop_ready())
    queues.retry_at("a", 5.0)  # the head goes again at 5
    assert not queues.add(item(3, "a")) and not queues.has_ready()
    assert queues.in_flight() == 0 and queues.parked() == 1
    queues.unpark_due(5.0)
    assert drain(queues) == [("a", 1), ("a", 2), ("a", 3)]


def test_idle_queues_hold_no_buffers() -> None:
    queues = SendQueues()
    assert queues.buffers() == 0  # a new actor's queues: nothing made yet
    queues.add(item(1, "a"))
    queues.add(item(2, "b"))
    assert queues.buffers() == 2  # the ready line and the queued seqs
    assert drain(queues) == [("a", 1), ("b", 2)]
    assert queues.buffers() == 3
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
    recipient twice, and the buffers go once everything is sent."""
    queues = SendQueues()
    accepted: dict[str, list[int]] = {}
    for seq, (to, _, _) in enumerate(steps, start=1):
        queues.add(item(seq, to))
        accepted.setdefault(to, []).append(seq)
    sent: dict[str, list[int]] = {}
    now, step = 0.0, 0
    while queues:
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
