"""``kill -9`` while the API holds a send: the ``fail`` number's message fails, the ``retry`` one is resent.

Real processes: a simulator process holding every send for a while (its ``latency``
fault) and a ``wadispatch run`` daemon. The daemon is killed while both numbers'
requests are held; the simulator still accepts them (WhatsApp did get them). The
daemon restarted on the same data dir recovers both outboxes: the number under
``on_ambiguous = "fail"`` fails its message as ambiguous (30008, as the twilio SDK
reads it) without sending it again, the one under the default ``retry`` sends it
again. Likewise when the daemon killed is one of two workers and the other takes its
buckets over. The simulator's log is the truth about what reached WhatsApp.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from actors.policy import AMBIGUOUS_FAILED
from dispatcher.core.bucketing import bucket_of
from tests.helpers.etcd import free_port
from tests.helpers.metrics import parse, value
from tests.helpers.processes import (
    ACCOUNT,
    NUMBERS,
    REQUEST_TIMEOUT,
    ROOT,
    TOKEN,
    config_text,
    create,
    owners,
    received,
    start_simulator,
    stop,
    wait_healthy,
)

AT_MOST_ONCE, AT_LEAST_ONCE = NUMBERS[0], NUMBERS[1]
HELD = 4.0  # seconds the simulator holds each send before accepting it


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)


def count(sim_port: int, body: str) -> int:
    return received(sim_port).count(body)


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text)


def fetch(port: int, sid: str) -> MessageInstance:
    """The message as the twilio SDK reads it from the daemon."""
    client = Client(ACCOUNT, TOKEN)
    client.api.base_url = f"http://127.0.0.1:{port}"
    return client.messages(sid).fetch()


World = tuple[int, int, Path, Callable[..., subprocess.Popen[bytes]]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """(daemon port, simulator port, data dir, start ``wadispatch run`` with extra arguments);
    every process started is stopped."""
    port, sim_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    text = config_text(data_dir, port, sim_port, numbers=(AT_MOST_ONCE, AT_LEAST_ONCE))
    text = text.replace(f'number = "{AT_MOST_ONCE}"\n', f'number = "{AT_MOST_ONCE}"\non_ambiguous = "fail"\n')
    text = text.replace(f"request_timeout = {REQUEST_TIMEOUT}", "request_timeout = 30.0")  # outlives HELD
    cfg = tmp_path / "dispatcher.toml"
    cfg.write_text(text)
    started: list[subprocess.Popen[bytes]] = [start_simulator(sim_port)]

    def daemon(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        started.append(proc)
        wait_healthy(port)
        return proc

    try:
        yield port, sim_port, data_dir, daemon
    finally:
        for proc in reversed(started):
            stop(proc)


def hold_both_sends(port: int, sim_port: int) -> tuple[str, str]:
    """Log both numbers in at full speed (the token is kept), then have the simulator hold every
    send ``HELD`` seconds, and create one message from each: (at-most-once sid, at-least-once sid)."""
    for number in (AT_MOST_ONCE, AT_LEAST_ONCE):
        create([port], number, f"warm-up {number}")
    wait_until(
        lambda: all(count(sim_port, f"warm-up {n}") == 1 for n in (AT_MOST_ONCE, AT_LEAST_ONCE)), "warm-ups"
    )
    for number in (AT_MOST_ONCE, AT_LEAST_ONCE):
        plan = httpx.put(
            f"http://127.0.0.1:{sim_port}/_sim/faults/{number[1:]}", json={"latency": HELD}, timeout=5.0
        )
        assert plan.status_code == 200, plan.text
    return create([port], AT_MOST_ONCE, "at most once"), create([port], AT_LEAST_ONCE, "at least once")


def in_flight(port: int, number: str) -> bool:
    """Whether the daemon answering on ``port`` (a new connection: with workers, any of them) has
    ``number``'s send in flight."""
    return metrics(port).get(("wadispatch_in_flight", (("number", number),))) == 1


def check_outcome(port: int, sim_port: int, once: str, again: str) -> None:
    """The at-most-once message failed as ambiguous and reached WhatsApp once; the other was resent."""
    wait_until(lambda: fetch(port, once).status == "failed", "the at-most-once message failed")
    failed = fetch(port, once)
    assert (failed.error_code, failed.error_message) == AMBIGUOUS_FAILED
    wait_until(
        lambda: count(sim_port, "at least once") == 2, "the at-least-once message sent again", HELD + 20
    )
    wait_until(lambda: fetch(port, again).status == "sent", "the resent message recorded")
    time.sleep(1.0)  # anything about to go out again would reach the simulator by now
    assert count(sim_port, "at most once") == 1  # never sent again


def test_kill_9_mid_send_then_a_restart_fails_the_at_most_once_message_and_resends_the_other(
    world: World,
) -> None:
    port, sim_port, _, daemon = world
    first = daemon()
    once, again = hold_both_sends(port, sim_port)
    wait_until(lambda: in_flight(port, AT_MOST_ONCE) and in_flight(port, AT_LEAST_ONCE), "both sends held")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    # The simulator still accepts what it held: WhatsApp got both messages.
    wait_until(
        lambda: count(sim_port, "at most once") == 1 == count(sim_port, "at least once"),
        "held sends",
        HELD + 10,
    )
    assert httpx.delete(f"http://127.0.0.1:{sim_port}/_sim/faults", timeout=5.0).status_code in (200, 204)

    daemon()  # the same data dir: it recovers both outboxes
    check_outcome(port, sim_port, once, again)
    samples = metrics(port)
    assert value(samples, "wadispatch_ambiguous_sends_total", number=AT_MOST_ONCE) == 1
    assert (
        value(samples, "wadispatch_ambiguous_sends_total", number=AT_LEAST_ONCE) == 0
    )  # no mark: just resent


def test_a_bucket_taken_over_mid_send_fails_the_at_most_once_message_and_resends_the_other(
    world: World,
) -> None:
    """``--workers 2`` (flock): the owners of both numbers' buckets are killed while their sends are
    held; the other worker (or a restarted one) takes the buckets and recovers the outboxes."""
    port, sim_port, data_dir, daemon = world
    daemon("--workers", "2")
    wait_until(lambda: len(owners(data_dir)) == 4 and len(set(owners(data_dir).values())) == 2, "two owners")
    once, again = hold_both_sends(port, sim_port)
    for number in (AT_MOST_ONCE, AT_LEAST_ONCE):
        wait_until(lambda n=number: in_flight(port, n), f"{number}'s send held")  # type: ignore[misc]
    held = owners(data_dir)
    victims = {held[bucket_of(n, 4)] for n in (AT_MOST_ONCE, AT_LEAST_ONCE)}
    for victim in victims:
        os.kill(int(victim.rsplit("-", 1)[1]), signal.SIGKILL)
    wait_until(
        lambda: not victims & set(owners(data_dir).values()) and len(owners(data_dir)) == 4, "taken over"
    )
    wait_until(lambda: count(sim_port, "at most once") == 1, "the held send", HELD + 10)
    check_outcome(port, sim_port, once, again)
