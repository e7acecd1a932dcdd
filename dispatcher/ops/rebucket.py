"""``wadispatch rebucket``: copy a data root into a new one of another bucket count, offline.

Every daemon on a root holds its lock shared; rebucket takes it exclusively, so it
refuses to run while any daemon does (and no daemon starts while it runs). It
builds the new root beside the old (``<root>.rebucket-<B>``), copies every record
into the bucket of its number, checks the counts, then swaps the directories: the
old root stays as ``<root>.before-rebucket-<time>`` until the operator removes it.
Nothing of the old root is changed, so an interrupted rebucket leaves it whole
(and the half-built copy, which the next run refuses to overwrite, naming it).

Where a record goes is decided per named DB, from the key or the value: a message
by its own number (the sender of an outbound one, the receiver of an inbound one),
the indexes of a message (listing, channel ids, idempotency keys, fallbacks) with
their message, what is keyed by number (outbox and its views, window, token, tier, dedup, numbers,
orphans, sticky senders) by that number, templates in bucket 0. Customer callbacks
get new sequence numbers in their new bucket, in their old order (so each message's
callbacks stay in order; their idempotency tokens change). A DB or a ``meta`` key this
version does not know is refused before anything is written: a rebucket never drops
what it does not understand.

Sids do not change: a sid carries its number's slot (``bucketing``), which names its
bucket under every power-of-two count; sids of a data dir older than buckets are
looked up in every bucket (the root's ``slots_since_ms`` is carried over).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import attrs
import lmdb
import msgspec
import structlog

from dispatcher.core import callbacks, datadir, dataroot, ledger, outbox
from dispatcher.core.bucketing import BucketCountError, bucket_of, check_count
from dispatcher.core.dataroot import DataRoot, DataRootError, create_root, open_root
from dispatcher.core.store import DB_NAMES, EPOCH_KEY, SEP, SEQ_MARK
from dispatcher.messages.idempotency import Entry as IdempotencyEntry

log = structlog.get_logger()

_PROBE: Final = b"probe" + SEP  # a storage probe's leftover (``actors.recording``)
_NUMBER_META: Final = (b"orphan" + SEP, b"orphan_at" + SEP, b"orphan_n" + SEP)
_HOME_META: Final = (b"template" + SEP, b"watemplate" + SEP)
_IDEM_EXPIRY: Final = b"idemexp" + SEP
_STICKY: Final = b"sticky" + SEP
_OUTBOX_MARK: Final = SEQ_MARK + b"outbox" + SEP
_CALLBACKS_MARK: Final = SEQ_MARK + callbacks.DB + SEP
_idem_decoder: Final = msgspec.msgpack.Decoder(IdempotencyEntry)


class RebucketError(DataRootError):
    """Rebucket refused (its message says why); the old root is untouched."""


@attrs.frozen
class Report:
    old_count: int
    new_count: int
    moved_to: Path  # where the old root now is
    copied: dict[str, int]  # records per DB
    per_bucket: list[int]  # records per new bucket
    dropped: dict[str, int]  # index entries whose message no longer exists (nothing refers to them)


def rebucket(path: str | Path, count: int, *, map_size: int = 1 << 30) -> Report:
    """Copy the data root at ``path`` into ``count`` buckets and put the copy in its place.

    Raises:
        DataRootBusyError: a daemon runs on the root.
        RebucketError: the count, the root or a record it holds cannot be rebucketed.
    """
    root_path = Path(path)
    try:
        check_count(count)
    except BucketCountError as exc:
        raise RebucketError(f"--buckets: {exc}") from None
    if not (root_path / dataroot.LAYOUT_FILE).exists() and not (root_path / dataroot.LMDB_FILE).exists():
        raise RebucketError(
            f"{root_path} is not a data root (no {dataroot.LAYOUT_FILE}, no {dataroot.LMDB_FILE})"
        )
    old = open_root(root_path)
    if old.count == count:
        raise RebucketError(f"data root {root_path} has {count} bucket(s) already")
    target = root_path.with_name(f"{root_path.name}.rebucket-{count}")
    if target.exists():
        raise RebucketError(f"{target} exists (left by an interrupted rebucket?): remove it first")
    with dataroot.held(old, exclusive=True):
        new = create_root(target, count, slots_since_ms=old.slots_since_ms)
        copied, per_bucket, dropped = _copy(old, new, map_size)
        moved_to = _free_name(root_path, f"before-rebucket-{time.strftime('%Y%m%dT%H%M%S')}")
        root_path.rename(moved_to)
        target.rename(root_path)
    log.info("rebucket.done", old=old.count, new=count, records=sum(per_bucket), kept_as=str(moved_to))
    return Report(old.count, count, moved_to, copied, per_bucket, dropped)


def _free_name(root: Path, suffix: str) -> Path:
    """``<root>.<suffix>``, or ``.<suffix>-2``, ``-3``... if taken (two rebuckets in one second)."""
    candidate = root.with_name(f"{root.name}.{suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = root.with_name(f"{root.name}.{suffix}-{n}")
    return candidate


def _open(path: Path, map_size: int, *, readonly: bool) -> lmdb.Environment:
    return lmdb.open(
        str(path),
        map_size=map_size,
        max_dbs=len(DB_NAMES) + 2,
        readonly=readonly,
        sync=True,
        metasync=True,
        writemap=False,
        mode=datadir.FILE_MODE,
    )


def _copy(old: DataRoot, new: DataRoot, map_size: int) -> tuple[dict[str, int], list[int], dict[str, int]]:
    sources = [_open(d, max(map_size, _size(d)), readonly=True) for d in old.dirs()]
    targets = [_open(d, max(map_size, sum(_size(s) for s in old.dirs())), readonly=False) for d in new.dirs()]
    try:
        for index, env in enumerate(sources):
            _check_known(env, old.bucket_dir(index))
        copier = _Copier(new.count, targets)
        for env in sources:
            copier.copy_bucket(env)
        copier.commit()
        _verify(sources, copier)
        return copier.copied, copier.per_bucket, copier.dropped
    finally:
        for env in (*sources, *targets):
            env.close()


def _verify(sources: list[lmdb.Environment], copier: _Copier) -> None:
    """Every record of every DB but ``meta`` is in the copy, or was a dangling index entry."""
    for name in DB_NAMES:
        if name == b"meta":
            continue
        had = 0
        for env in sources:
            if _has(env, name):
                with env.begin() as txn:
                    had += int(txn.stat(env.open_db(name, create=False))["entries"])
        key = name.decode()
        if had != copier.copied.get(key, 0) + copier.dropped.get(key, 0):
            raise RebucketError(f"{key}: {had} records, {copier.copied.get(key, 0)} copied: not swapping")


def _size(path: Path) -> int:
    file = path / dataroot.LMDB_FILE
    return file.stat().st_size + (64 << 20) if file.exists() else 0


def _check_known(env: lmdb.Environment, where: Path) -> None:
    """Refuse a named DB this version does not know (before anything is written)."""
    known = set(DB_NAMES)
    with env.begin() as txn:
        for name, _ in txn.cursor():
            if bytes(name) not in known:
                raise RebucketError(
                    f"{where}: named DB {bytes(name)!r} is not one this version knows: not rebucketing it"
                )


@attrs.define
class _Copier:
    count: int
    targets: list[lmdb.Environment]
    copied: dict[str, int] = attrs.Factory(dict)
    per_bucket: list[int] = attrs.Factory(list)
    dropped: dict[str, int] = attrs.Factory(dict)
    _txns: list[lmdb.Transaction] = attrs.Factory(list)
    _dbs: list[dict[bytes, lmdb._Database]] = attrs.Factory(list)
    _callback_seqs: dict[tuple[int, bytes], int] = attrs.Factory(dict)
    views_built: bool = False  # the source's outboxes have their views (core/outbox)

    def __attrs_post_init__(self) -> None:
        self.per_bucket = [0] * self.count
        for env in self.targets:
            self._dbs.append({name: env.open_db(name) for name in DB_NAMES})
            self._txns.append(env.begin(write=True))

    def commit(self) -> None:
        for (bucket, prefix), seq in self._callback_seqs.items():
            self._put(bucket, b"meta", _CALLBACKS_MARK + prefix, seq.to_bytes(8, "big"), count=False)
        if self.views_built:
            for bucket in range(self.count):
                self._txns[bucket].put(outbox.VIEWS_BUILT, b"1", db=self._dbs[bucket][b"meta"])
        for txn in self._txns:
            txn.commit()

    def _put(self, bucket: int, db: bytes, key: bytes, value: bytes, *, count: bool = True) -> None:
        if not self._txns[bucket].put(key, value, db=self._dbs[bucket][db], overwrite=False):
            raise RebucketError(f"two records for one key of {db.decode()} in bucket {bucket}: {key[:60]!r}")
        if count:
            self.copied[db.decode()] = self.copied.get(db.decode(), 0) + 1
            self.per_bucket[bucket] += 1

    def _of(self, number: bytes | str) -> int:
        return bucket_of(number.decode() if isinstance(number, bytes) else number, self.count)

    def copy_bucket(self, env: lmdb.Environment) -> None:
        dbs = {name: env.open_db(name, create=False) for name in DB_NAMES if _has(env, name)}
        with env.begin() as txn:

            def rows(name: bytes) -> Iterator[tuple[bytes, bytes]]:
                if name in dbs:
                    for key, value in txn.cursor(db=dbs[name]):
                        yield bytes(key), bytes(value)

            homes: dict[bytes, int] = {}  # sid -> its new bucket
            for key, value in rows(b"messages"):
                record = ledger.load(value)
                number = record.to_number if record.direction == "inbound" else record.from_number
                homes[key] = self._of(number)
                self._put(homes[key], b"messages", key, value)
            by_sid = self._by_sid(homes)
            self._each(rows(b"by_account"), b"by_account", lambda k, v: by_sid(k[k.index(SEP) + 9 :]))
            self._each(rows(b"wamid"), b"wamid", lambda k, v: by_sid(v))
            self._each(rows(b"fallbacks"), b"fallbacks", lambda k, v: by_sid(k[8:]))
            self._each(rows(b"idem"), b"idem", lambda k, v: by_sid(_idem_decoder.decode(v).sid.encode()))
            for name in (
                b"outbox",
                b"outbox_to",
                b"expiry",
                b"started",
                b"window",
                b"tier",
                b"numbers",
                b"tokens",
            ):
                self._each(rows(name), name, lambda k, v: self._of(k[: k.index(SEP)]))
            self._each(rows(b"scheduled"), b"scheduled", lambda k, v: self._of(v))
            self._each(rows(b"dedup"), b"dedup", lambda k, v: self._of(_dedup_number(k)))
            for key, value in rows(callbacks.DB):
                entry = callbacks.entry_decoder.decode(value)
                bucket = self._of(entry.number)
                prefix = key[: key.index(SEP) + 1]
                seq = self._callback_seqs.get((bucket, prefix), 0) + 1
                self._callback_seqs[bucket, prefix] = seq
                self._put(bucket, callbacks.DB, prefix + seq.to_bytes(8, "big"), value)
            idem = dict(rows(b"idem"))
            for key, value in rows(b"meta"):
                home = self._meta_bucket(key, value, by_sid, idem)
                if home is not None:
                    self._put(home, b"meta", key, value)

    def _drop(self, name: bytes) -> None:
        self.dropped[name.decode()] = self.dropped.get(name.decode(), 0) + 1

    def _by_sid(self, homes: dict[bytes, int]) -> Callable[[bytes], int | None]:
        def of(sid: bytes) -> int | None:
            return homes.get(sid)

        return of

    def _each(
        self, rows: Iterator[tuple[bytes, bytes]], name: bytes, where: Callable[[bytes, bytes], int | None]
    ) -> None:
        for key, value in rows:
            bucket = where(key, value)
            if bucket is None:
                self._drop(name)  # an index entry whose message is gone: nothing refers to it
                continue
            self._put(bucket, name, key, value)

    def _meta_bucket(
        self, key: bytes, value: bytes, by_sid: Callable[[bytes], int | None], idem: dict[bytes, bytes]
    ) -> int | None:
        if key == EPOCH_KEY or key.startswith((_PROBE, _CALLBACKS_MARK)):
            return None  # a new root has no owner yet; callbacks got new sequences (commit)
        if key.startswith(_OUTBOX_MARK):
            return self._of(key[len(_OUTBOX_MARK) :].split(SEP, 1)[0])
        if key.startswith(outbox.DEPTH_MARK):  # number NUL ...: its outbox's durable depth
            return self._of(key[len(outbox.DEPTH_MARK) :])
        if key == outbox.VIEWS_BUILT:
            self.views_built = True  # every bucket gets it (commit): the views are copied with the outbox
            return None
        if key.startswith(_HOME_META):
            return 0
        if key.startswith(_STICKY):
            return self._of(value)
        for prefix in _NUMBER_META:
            if key.startswith(prefix):
                return self._of(key[len(prefix) :].split(SEP, 1)[0])
        if key.startswith(_IDEM_EXPIRY):
            entry = idem.get(key[len(_IDEM_EXPIRY) + 8 :])
            bucket = None if entry is None else by_sid(_idem_decoder.decode(entry).sid.encode())
            if bucket is None:
                self._drop(b"meta")
            return bucket
        raise RebucketError(f"a meta key this version does not know: {key[:60]!r}: not rebucketing it")


def _has(env: lmdb.Environment, name: bytes) -> bool:
    with env.begin() as txn:
        return txn.get(name) is not None


def _dedup_number(key: bytes) -> bytes:
    """A dedup row is ``k`` + number NUL event; its time index ``t`` + 8 bytes + the row."""
    row = key[9:] if key.startswith(b"t") else key
    return row[1 : row.index(SEP)]
