"""The data dir is owner-only (0700, files 0600) whatever the umask, and an old permissive one is fixed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dispatcher.core import datadir
from dispatcher.core.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_data_dir_is_owner_only_under_a_permissive_umask(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "parent" / "data"
    store = Store(data, map_size=8 << 20)
    try:
        assert mode(data) == 0o700
        files = sorted(p.name for p in data.iterdir())
        assert files == ["data.mdb", "lock.mdb"]
        assert all(mode(data / name) == 0o600 for name in files)
    finally:
        store.close_env()


def test_an_existing_readable_data_dir_is_fixed_on_start_with_a_log_line(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data"
    Store(data, map_size=8 << 20).close_env()
    data.chmod(0o755)
    for name in ("data.mdb", "lock.mdb"):
        (data / name).chmod(0o644)
    with capture_logs() as logs:
        store = Store(data, map_size=8 << 20)
    try:
        assert mode(data) == 0o700
        assert mode(data / "data.mdb") == mode(data / "lock.mdb") == 0o600
    finally:
        store.close_env()
    fixed = {(e["path"], e["was"], e["now"]) for e in logs if e["event"] == "store.permissions_fixed"}
    assert fixed == {
        (str(data), "0o755", "0o700"),
        (str(data / "data.mdb"), "0o644", "0o600"),
        (str(data / "lock.mdb"), "0o644", "0o600"),
    }


def test_an_owner_only_data_dir_is_left_alone_silently(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Store(data, map_size=8 << 20).close_env()
    with capture_logs() as logs:
        Store(data, map_size=8 << 20).close_env()
    assert [e for e in logs if e["event"] == "store.permissions_fixed"] == []


def test_a_file_another_process_removes_while_the_dir_is_checked_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers of ``--workers N`` each open every bucket at start: one listed another's
    ``.write-probe-<pid>`` just before that one removed it, and the lstat that followed failed the
    worker's start ("data dir ... is not writable: No such file or directory", seen in bench.cluster)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    gone = data / ".write-probe-4242"
    gone.write_bytes(b"")
    real_scandir = os.scandir

    class Listing:
        """The real listing, taken before the other process removes its file."""

        def __init__(self, path: Path) -> None:
            with real_scandir(path) as entries:
                self.entries = list(entries)
            gone.unlink()

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return iter(self.entries)

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(datadir.os, "scandir", Listing)
    datadir.prepare(data)  # no FileNotFoundError
    assert not gone.exists()
