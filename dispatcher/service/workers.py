"""``wadispatch run --workers N``: N daemon processes on one host, one listen port.

Python runs one thread of Python at a time, so one process uses one core. Here the
parent starts N children, each a whole ``wadispatch run`` on the same config and
data root: they share the listen port (``SO_REUSEPORT``: the kernel spreads new
connections over them), split the buckets by ``flock`` (``dispatcher.ownership``)
and forward a request for a bucket another one owns to it, over its own peer port.

The parent only supervises: it forwards SIGTERM / SIGINT / SIGHUP to every child,
restarts a child that exits on its own (after ``restart_delay``, doubling up to a
minute while it keeps failing: meanwhile the others take its buckets), tells
systemd READY=1 once every child is ready (each writes a line to a pipe it
inherits), pings the watchdog while every child runs, and exits once every child
has exited after a stop signal (1 if one of them failed).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Final, final

import structlog
import trio

from dispatcher.service.sdnotify import Notifier

log = structlog.get_logger()

READY_FD_ENV: Final = "WADISPATCH_READY_FD"
WORKER_ENV: Final = "WADISPATCH_WORKER"
MAX_RESTART_DELAY: Final = 60.0
_FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PARENT_ONLY: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")  # systemd talks to the parent


def report_ready() -> None:
    """In a worker: tell the parent this worker serves (no-op outside ``--workers``)."""
    fd = os.environ.get(READY_FD_ENV)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except OSError:
        pass
    os.environ.pop(READY_FD_ENV, None)


@final
class _Worker:
    def __init__(self, index: int, command: Sequence[str]) -> None:
        self.index = index
        self.command = list(command)
        self.proc: trio.Process | None = None
        self.ready = trio.Event()
        self.restarts = 0


@final
class WorkerPool:
    """The parent of ``--workers N``."""

    def __init__(
        self, command: Sequence[str], workers: int, *, notifier: Notifier, restart_delay: float = 1.0
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self._workers = [_Worker(i, command) for i in range(workers)]
        self._notifier = notifier
        self._restart_delay = restart_delay
        self._stopping = False
        self.failed = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until a stop signal and every one of them has exited."""
        with trio.open_signal_receiver(*_FORWARDED) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward, signals)
                async with trio.open_nursery() as workers:
                    for worker in self._workers:
                        workers.start_soon(self._keep, worker)
                    for worker in self._workers:
                        await worker.ready.wait()
                    self._notifier.ready(f"{len(self._workers)} workers serving")
                    log.info("workers.ready", workers=len(self._workers), pids=self.pids)
                    task_status.started()
                    if self._notifier.watchdog_usec:
                        nursery.start_soon(self._watchdog)
                nursery.cancel_scope.cancel()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(signum)

    async def _forward(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("workers.reload", pids=self.pids)
                for worker in self._workers:
                    if worker.proc is not None and worker.proc.returncode is None:
                        worker.proc.send_signal(signum)
                continue
            if not self._stopping:
                self._notifier.stopping()
                log.info("workers.stopping", signal=signal.Signals(signum).name)
            self.stop(signum)

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker; start it again if it exits while the pool is not stopping."""
        delay = self._restart_delay
        while not self._stopping:
            read_fd, write_fd = os.pipe()
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
            }
            env[READY_FD_ENV] = str(write_fd)
            env[WORKER_ENV] = str(worker.index)
            try:
                worker.proc = await trio.lowlevel.open_process(worker.command, env=env, pass_fds=(write_fd,))
            finally:
                os.close(write_fd)
            async with trio.open_nursery() as watch:
                watch.start_soon(self._wait_ready, worker, read_fd)
                code = await worker.proc.wait()
                watch.cancel_scope.cancel()
            if self.stopping:
                # A worker still starting when the stop came dies of the signal itself: not a failure.
                if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                    self.failed = True
                    log.error("workers.exit_failed", worker=worker.index, code=code)
                return
            worker.restarts += 1
            log.error("workers.died", worker=worker.index, pid=worker.proc.pid, code=code, restart_in=delay)
            await trio.sleep(delay)
            delay = min(MAX_RESTART_DELAY, delay * 2)

    async def _wait_ready(self, worker: _Worker, read_fd: int) -> None:
        stream = trio.lowlevel.FdStream(read_fd)
        async with stream:
            data = await stream.receive_some(64)
        if data.startswith(b"ready"):
            worker.ready.set()

    async def _watchdog(self) -> None:
        period = (self._notifier.watchdog_usec or 0) / 2_000_000
        while True:
            if all(w.proc is not None and w.proc.returncode is None for w in self._workers):
                self._notifier.notify(WATCHDOG=1)
            await trio.sleep(period)


def worker_command(run_args: Sequence[str]) -> list[str]:
    """The command line of one worker: ``wadispatch run`` with ``run_args`` (its options but
    ``--workers``) and ``--worker``."""
    return [sys.executable, "-m", "dispatcher", "run", *run_args, "--worker"]


def run_pool(run_args: Sequence[str], workers: int) -> int:
    """Run ``workers`` workers of ``wadispatch run`` with ``run_args`` until stopped; the exit code."""
    pool = WorkerPool(worker_command(run_args), workers, notifier=Notifier.from_environ())
    trio.run(pool.run)
    return 1 if pool.failed else 0
