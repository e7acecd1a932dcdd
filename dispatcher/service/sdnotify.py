"""systemd's service notification protocol (sd_notify), spoken directly.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Without
that variable (not under systemd) every call is a no-op. A notification that
cannot be sent is logged and dropped: systemd being away must never stop the
daemon.

The watchdog pings from a Trio task, so a blocked event loop stops the pings by
itself; the task also withholds them while a health check fails (e.g. the
LMDB writer has queued work and makes no progress), so systemd restarts a
daemon that is alive but stuck.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import final

import structlog
import trio

log = structlog.get_logger()


@final
class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address: str | bytes | None = None
        if address:
            # "@name" is an abstract socket: its name starts with a NUL byte.
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` (honouring ``WATCHDOG_PID``)."""
        env = os.environ if environ is None else environ
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (``ready=1`` -> ``READY=1``); True if the datagram left."""
        if self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("sdnotify.failed", error=str(exc), fields=sorted(fields))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready=1, status=status)

    def reloading(self) -> bool:
        # Type=notify-reload (systemd >= 253) wants the CLOCK_MONOTONIC time of the reload.
        return self.notify(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.notify(stopping=1, status="draining")

    async def watchdog(
        self,
        healthy: Callable[[], bool],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Ping ``WATCHDOG=1`` at half the watchdog interval while ``healthy()``; forever."""
        task_status.started()
        if self.watchdog_usec is None or not self.enabled:
            return
        interval = self.watchdog_usec / 2_000_000
        withheld = False
        while True:
            if healthy():
                if withheld:
                    log.info("watchdog.resumed")
                    withheld = False
                self.notify(watchdog=1)
            elif not withheld:
                log.error("watchdog.withheld", reason="health check failed")
                withheld = True
            await trio.sleep(interval)


@final
class WriterProgress:
    """Health check: the LMDB writer is not stuck (queued writes and no commit for a while)."""

    def __init__(self, statistics: Callable[[], tuple[int, int]], *, stall_after: float) -> None:
        self._statistics = statistics  # () -> (commits so far, writes queued now)
        self._stall_after = stall_after
        self._commits = -1
        self._since = 0.0

    def __call__(self) -> bool:
        commits, queued = self._statistics()
        now = trio.current_time()
        if commits != self._commits or queued == 0:
            self._commits = commits
            self._since = now
            return True
        return now - self._since < self._stall_after
