"""Ownership on one host: an exclusive ``flock`` on a bucket's lock file.

N processes share one data root. A process owns a bucket while it holds an
exclusive flock on the bucket's lock file; the kernel lets go of it the instant
the process dies, however it dies, so there is no lease to wait out. Each live
process also holds a flock on its own entry in the members directory (the host's
process table): the number of held entries is the number of live processes, and
an entry whose lock can be taken belongs to a dead process (it is removed).

Every ``poll_interval`` a process counts the live members, reads who holds what,
takes free buckets up to its fair share (``balance``) and lets go of its extras
after draining them. So a dead process's buckets are taken again within about
``poll_interval`` (0.25 s by default).

The lock file records its holder (id, forwarding address and lane) and the bucket's epoch,
bumped by every new holder under the lock and fsynced before the holder's first
commit: the Store's fencing then refuses a commit from an earlier holder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, final

import msgspec
import structlog
import trio

from actors.lease import ALWAYS_OPEN
from dispatcher.core import datadir
from dispatcher.ownership.balance import fair_share, to_release, to_take
from dispatcher.ownership.interface import BucketHost, Owner

log = structlog.get_logger()

RECORD_SIZE: Final = 512  # a lock file's record, written in one pwrite of this size
MEMBER_SUFFIX: Final = ".member"
POLL_INTERVAL: Final = 0.25


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """What a lock file (or a member entry) says: who holds it, where it takes forwarded requests
    (its HTTP peer address, and its lane: "" in a record written before lanes existed)."""

    owner_id: str = ""  # "": let go of cleanly, nobody holds it
    address: str = ""
    epoch: int = 0
    lane: str = ""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Holder).decode


def _write_record(fd: int, holder: Holder) -> None:
    data = _encode(holder)
    if len(data) > RECORD_SIZE:
        raise ValueError(f"owner record too long ({len(data)} bytes)")
    os.pwrite(fd, data.ljust(RECORD_SIZE), 0)
    os.fsync(fd)


def read_record(path: Path) -> Holder | None:
    """The record in ``path`` (None: missing, empty or being rewritten)."""
    try:
        with path.open("rb") as f:
            raw = f.read(RECORD_SIZE).rstrip()
    except FileNotFoundError:
        return None
    if not raw:
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return None


def _try_lock(fd: int, kind: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


@final
class FlockOwnership:
    """The ``flock`` backend of ``Ownership`` (one host, N processes on one data root)."""

    def __init__(
        self,
        *,
        host: BucketHost,
        buckets: int,
        lock_path: Callable[[int], Path],
        members_dir: Path,
        owner_id: str,
        address: str,
        lane: str = "",
        poll_interval: float = POLL_INTERVAL,
        epoch_floor: Callable[[int], int] = lambda bucket: 0,
    ) -> None:
        """``lock_path(b)``: bucket b's lock file; ``members_dir``: the process table;
        ``address``: where this process takes forwarded requests (``http://host:port``), ``lane``
        its lane for them (``lane://host:port``, or "");
        ``epoch_floor(b)``: the epoch bucket b already records (a new epoch is above it)."""
        self._host = host
        self._count = buckets
        self._lock_path = lock_path
        self._members_dir = members_dir
        self._owner_id = owner_id
        self._address = address
        self._lane = lane
        self._poll = poll_interval
        self._epoch_floor = epoch_floor
        self._fds: dict[int, int] = {}  # bucket -> fd holding its flock
        self._epochs: dict[int, int] = {}
        self._member_fd: int | None = None
        self._owners: dict[int, Owner] = {}
        self._live = 1
        self._stopping = False
        self._wake = trio.Event()
        self._start = zlib.crc32(owner_id.encode()) % buckets

    @property
    def owner_id(self) -> str:
        return self._owner_id

    # -- the process table ------------------------------------------------------------

    def _join(self) -> None:
        datadir.prepare(self._members_dir)
        path = self._members_dir / (_safe(self._owner_id) + MEMBER_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, datadir.FILE_MODE)
        if not _try_lock(fd):
            os.close(fd)
            raise RuntimeError(
                f"member entry {path} is held by another process with owner id {self._owner_id}"
            )
        _write_record(fd, Holder(owner_id=self._owner_id, address=self._address, lane=self._lane))
        self._member_fd = fd

    def _leave(self) -> None:
        if self._member_fd is not None:
            path = self._members_dir / (_safe(self._owner_id) + MEMBER_SUFFIX)
            path.unlink(missing_ok=True)
            os.close(self._member_fd)  # closing drops the lock
            self._member_fd = None

    def live_members(self) -> dict[str, str]:
        """Live processes (owner id -> address); removes the entries of dead ones."""
        live = {self._owner_id: self._address}
        for path in self._members_dir.glob("*" + MEMBER_SUFFIX):
            holder = read_record(path)
            if holder is not None and holder.owner_id == self._owner_id:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if _try_lock(fd, fcntl.LOCK_SH):  # nobody holds it: its process is gone
                    path.unlink(missing_ok=True)
                    continue
            finally:
                os.close(fd)
            if holder is not None:
                live[holder.owner_id] = holder.address
        return live

    # -- buckets ------------------------------------------------------------------------

    def _survey(self) -> None:
        """Who holds which bucket, as far as the lock files and the live members say."""
        members = self.live_members()
        self._live = len(members)
        owners: dict[int, Owner] = {}
        for bucket in range(self._count):
            if bucket in self._fds:
                owners[bucket] = Owner(self._owner_id, self._address, self._epochs[bucket], self._lane)
                continue
            holder = read_record(self._lock_path(bucket))
            if holder is not None and holder.owner_id and holder.owner_id in members:
                owners[bucket] = Owner(holder.owner_id, holder.address, holder.epoch, holder.lane)
        self._owners = owners

    def _claim(self, bucket: int) -> int | None:
        """Take bucket's lock if free: its new epoch, or None if someone holds it."""
        path = self._lock_path(bucket)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, datadir.FILE_MODE)
        try:
            if not _try_lock(fd):
                os.close(fd)
                return None
            previous = read_record(path)
            epoch = max(previous.epoch if previous is not None else 0, self._epoch_floor(bucket)) + 1
            _write_record(
                fd, Holder(owner_id=self._owner_id, address=self._address, epoch=epoch, lane=self._lane)
            )
        except BaseException:
            os.close(fd)
            raise
        self._fds[bucket] = fd
        self._epochs[bucket] = epoch
        self._owners[bucket] = Owner(self._owner_id, self._address, epoch, self._lane)
        return epoch

    def _unlock(self, bucket: int) -> None:
        fd = self._fds.pop(bucket)
        epoch = self._epochs.pop(bucket)
        try:
            _write_record(fd, Holder(epoch=epoch))  # let go cleanly: free at once for the others' view
        finally:
            os.close(fd)
        self._owners.pop(bucket, None)

    async def _release(self, bucket: int) -> None:
        log.info("ownership.releasing", bucket=bucket)
        with trio.CancelScope(shield=True):
            await self._host.lost(bucket)
        self._unlock(bucket)
        log.info("ownership.released", bucket=bucket)

    async def _balance(self) -> None:
        self._survey()
        share = fair_share(self._count, self._live)
        free = [b for b in range(self._count) if b not in self._owners]
        for bucket in to_take(free, len(self._fds), share, start=self._start, buckets=self._count):
            if self._stopping:
                return
            epoch = self._claim(bucket)
            if epoch is not None:
                log.info("ownership.gained", bucket=bucket, epoch=epoch, live=self._live, share=share)
                await self._host.gained(bucket, epoch, ALWAYS_OPEN)
        for bucket in to_release(self._fds, share):
            await self._release(bucket)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and keep buckets until ``stop()`` (or cancelled); then drain and let go of each."""
        self._join()
        try:
            await self._balance()
            task_status.started()
            while not self._stopping:
                with trio.move_on_after(self._poll):
                    await self._wake.wait()
                if not self._stopping:
                    await self._balance()
        finally:
            with trio.CancelScope(shield=True):
                for bucket in list(self._fds):
                    await self._release(bucket)
            self._leave()

    def stop(self) -> None:
        """Take nothing more; ``run`` drains and lets go of every bucket, then returns."""
        self._stopping = True
        self._wake.set()

    @property
    def live(self) -> int:
        return self._live

    @property
    def healthy(self) -> bool:
        return True

    def owner(self, bucket: int) -> Owner | None:
        return self._owners.get(bucket)

    def owned(self) -> Mapping[int, int]:
        return dict(self._epochs)

    def status(self) -> Mapping[str, object]:
        return {
            "backend": "flock",
            "owner_id": self._owner_id,
            "live": self._live,
            "fair_share": fair_share(self._count, self._live),
            "owned": sorted(self._fds),
        }


def _safe(owner_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in owner_id)
