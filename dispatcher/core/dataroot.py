"""The data root: how many buckets it has (fixed at creation, recorded in it) and where each lives.

A bucket is one LMDB environment. A data root of one bucket keeps it in the root
itself, exactly where a data dir of an older version has its ``data.mdb``, so an
existing data dir is bucket 0 of a one-bucket root with nothing to migrate. A
root of B > 1 buckets keeps bucket ``i`` in ``buckets/{i:05d}/``, each a
directory of its own: the unit a new owner attaches when a bucket moves.

``layout.json`` records the count (and, for a data dir adopted from an older
version, the instant its sids began carrying their slot: see ``bucketing``).
Changing the count is ``wadispatch rebucket``, offline: every daemon on a root
holds a shared lock on ``root.lock`` while it runs, and rebucket takes it
exclusively or refuses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs

from dispatcher.core import datadir
from dispatcher.core.bucketing import BucketCountError, check_count
from dispatcher.core.store import StoreError

LAYOUT_FILE: Final = "layout.json"
ROOT_LOCK: Final = "root.lock"
OWNER_LOCK: Final = "owner.lock"  # per bucket: held by the process that owns the bucket (flock)
BUCKETS_DIR: Final = "buckets"
LMDB_FILE: Final = "data.mdb"
FORMAT: Final = 1


class DataRootError(StoreError):
    """The data root cannot be used as asked (its message says what to do)."""


class DataRootBusyError(DataRootError):
    """A daemon holds the data root (rebucket refuses to run under it)."""


@attrs.frozen
class DataRoot:
    path: Path
    count: int  # buckets, a power of two
    slots_since_ms: int = 0  # sids created before this carry no slot (a data dir adopted from before buckets)

    def bucket_dir(self, index: int) -> Path:
        if not 0 <= index < self.count:
            raise IndexError(f"bucket {index} of {self.count}")
        return self.path if self.count == 1 else self.path / BUCKETS_DIR / f"{index:05d}"

    def lock_path(self, index: int) -> Path:
        """The bucket's owner lock file (ownership takes an exclusive flock on it)."""
        return self.bucket_dir(index) / OWNER_LOCK

    def dirs(self) -> list[Path]:
        return [self.bucket_dir(i) for i in range(self.count)]


def open_root(path: str | os.PathLike[str], wanted: int | None = None) -> DataRoot:
    """The data root at ``path``, created with ``wanted`` buckets (default 1) if new.

    Raises:
        DataRootError: ``wanted`` differs from the recorded count, the layout file is
            unreadable, or the root cannot be created.
    """
    root = Path(path)
    try:
        if wanted is not None:
            check_count(wanted)
        datadir.prepare(root)
        with _layout_lock(root):
            found = _read(root) if (root / LAYOUT_FILE).exists() else _create(root, wanted or 1)
    except BucketCountError as exc:
        raise DataRootError(f"store.buckets: {exc}") from None
    except OSError as exc:
        raise DataRootError(f"data dir {root} is not writable: {exc.strerror or exc}") from exc
    if wanted is not None and wanted != found.count:
        raise DataRootError(
            f"data root {root} has {found.count} bucket(s) and [store] buckets asks for {wanted}: the "
            f"count is fixed when a root is created; stop every daemon on it and run "
            f"`wadispatch rebucket --buckets {wanted}`, or set [store] buckets = {found.count}"
        )
    return found


def create_root(path: str | os.PathLike[str], count: int, *, slots_since_ms: int = 0) -> DataRoot:
    """A new, empty data root of ``count`` buckets (rebucket's target); DataRootError if ``path``
    exists. ``slots_since_ms``: carried over from the root it is copied from (its older sids)."""
    root = Path(path)
    try:
        check_count(count)
    except BucketCountError as exc:
        raise DataRootError(str(exc)) from None
    if root.exists():
        raise DataRootError(f"{root} exists already")
    datadir.prepare(root)
    found = DataRoot(root, count, slots_since_ms=slots_since_ms)
    _write(found)
    for index in range(count):
        datadir.prepare(found.bucket_dir(index))
    return found


def _create(root: Path, count: int) -> DataRoot:
    if (root / BUCKETS_DIR).exists():
        raise DataRootError(
            f"data root {root} has a {BUCKETS_DIR}/ directory but no {LAYOUT_FILE}: not touching it"
        )
    legacy = (root / LMDB_FILE).exists()
    if legacy and count != 1:
        raise DataRootError(
            f"data dir {root} was created before buckets: it is one bucket as it is; run "
            f"`wadispatch rebucket --buckets {count}` to split it"
        )
    # A data dir of an older version: its sids carry random digits where the slot goes.
    found = DataRoot(root, count, slots_since_ms=time.time_ns() // 1_000_000 + 1 if legacy else 0)
    _write(found)
    for index in range(count):
        datadir.prepare(found.bucket_dir(index))
    return found


def _write(found: DataRoot) -> None:
    """The layout file, atomically: a temporary file, fsync, rename, fsync of the directory."""
    body = json.dumps(
        {"format": FORMAT, "buckets": found.count, "slots_since_ms": found.slots_since_ms}, indent=2
    ).encode()
    tmp = found.path / (LAYOUT_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, datadir.FILE_MODE)
    try:
        os.write(fd, body + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, found.path / LAYOUT_FILE)
    dir_fd = os.open(found.path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _layout_lock(root: Path) -> Iterator[None]:
    """An exclusive flock on the root directory itself (no file of its own) while the root is
    opened: the workers of ``--workers N`` start together on a new root, and one that read the
    layout file while another was still making the bucket directories found a bucket missing.
    Each now waits for the one creating it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(root: Path) -> DataRoot:
    where = root / LAYOUT_FILE
    try:
        raw = json.loads(where.read_bytes())
        if raw.get("format") != FORMAT:
            raise DataRootError(
                f"{where}: format {raw.get('format')!r} is not one this version reads ({FORMAT})"
            )
        count = raw["buckets"]
        since = raw.get("slots_since_ms", 0)
        if not isinstance(count, int) or not isinstance(since, int):
            raise TypeError("buckets and slots_since_ms must be integers")
        check_count(count)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataRootError(f"{where} is not a wadispatch data root layout: {exc}") from None
    return DataRoot(root, count, slots_since_ms=since)


@contextlib.contextmanager
def held(root: DataRoot, *, exclusive: bool = False) -> Iterator[None]:
    """Hold ``root.lock``: shared by each running daemon, exclusive for rebucket.

    Raises:
        DataRootBusyError: ``exclusive`` and a daemon holds it, or shared and rebucket holds it.
    """
    path = root.path / ROOT_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, datadir.FILE_MODE)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            who = "a daemon is running on it" if exclusive else "wadispatch rebucket is running on it"
            raise DataRootBusyError(f"data root {root.path} is busy: {who}") from None
        yield
    finally:
        os.close(fd)  # releases the lock
