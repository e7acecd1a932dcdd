"""sd_notify against a fake NOTIFY_SOCKET: READY after start, WATCHDOG while healthy, STOPPING, RELOADING."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from dispatcher.service.sdnotify import Notifier, WriterProgress
from tests.helpers.daemon import running_daemon, sandbox_config
from tests.helpers.systemd import FakeSystemd


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = str(tmp_path / "notify.sock")
    fake = FakeSystemd(path)
    yield fake, path
    fake.close()


def test_messages_are_key_value_lines(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    notifier = Notifier(path)
    assert notifier.ready("serving 3 numbers")
    assert notifier.stopping()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    ready, stopping, reloading = fake.messages()
    assert ready == {"READY": "1", "STATUS": "serving 3 numbers"}
    assert stopping == {"STOPPING": "1", "STATUS": "draining"}
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= before + 5_000_000


def test_abstract_socket_address() -> None:
    name = f"@wadispatch-test-{os.getpid()}"
    fake = FakeSystemd(b"\0" + name[1:].encode())
    try:
        assert Notifier(name).ready("ok")
        assert fake.messages() == [{"READY": "1", "STATUS": "ok"}]
    finally:
        fake.close()


def test_without_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled and not notifier.ready("x") and notifier.watchdog_usec is None
    # A socket that went away is logged, never raised.
    assert not Notifier(str(tmp_path / "gone.sock")).ready("x")


def test_watchdog_settings_from_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env).watchdog_usec == 30_000_000
    assert Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_usec == 30_000_000
    # The watchdog is meant for another process (e.g. a parent shell): not ours to ping.
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "1"}).watchdog_usec is None
    assert Notifier.from_environ({**env, "WATCHDOG_USEC": "junk"}).watchdog_usec is None
    assert Notifier.from_environ({**env, "WATCHDOG_USEC": "0"}).watchdog_usec is None


async def test_watchdog_pings_only_while_healthy(
    systemd: tuple[FakeSystemd, str], autojump_clock: trio.testing.MockClock
) -> None:
    fake, path = systemd
    notifier = Notifier(path, watchdog_usec=2_000_000)  # ping every second
    healthy = True
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.watchdog, lambda: healthy)
        await trio.sleep(2.5)
        assert fake.messages() == [{"WATCHDOG": "1"}] * 3  # at 0, 1 and 2 s
        healthy = False
        await trio.sleep(3)
        assert fake.messages() == []
        healthy = True
        await trio.sleep(1)
        assert fake.messages() == [{"WATCHDOG": "1"}]
        nursery.cancel_scope.cancel()


async def test_writer_progress_fails_only_when_queued_work_stalls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stats = {"commits": 0, "queued": 0}
    check = WriterProgress(lambda: (stats["commits"], stats["queued"]), stall_after=10.0)
    assert check()
    await trio.sleep(60)
    assert check()  # idle: nothing queued is not a stall
    stats["queued"] = 5
    assert check()
    await trio.sleep(9)
    assert check()
    await trio.sleep(2)
    assert not check()  # queued work, no commit for 11 s
    stats["commits"] = 1
    assert check()


async def test_daemon_notifies_ready_then_stopping(systemd: tuple[FakeSystemd, str], tmp_path: Path) -> None:
    fake, path = systemd
    notifier = Notifier(path, watchdog_usec=60_000_000)
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data"), notifier=notifier) as (daemon, client):
            # READY=1 comes once the front door listens and outboxes are recovered.
            assert (await client.get("/healthz")).status_code in (200, 503)
            messages = fake.messages()
            assert {"WATCHDOG": "1"} in messages
            ready = [m for m in messages if m.get("READY") == "1"]
            assert ready == [{"READY": "1", "STATUS": f"serving 3 numbers on {daemon.url}"}]
    assert {"STOPPING": "1", "STATUS": "draining"} in fake.messages()
