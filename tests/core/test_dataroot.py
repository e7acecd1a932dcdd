"""The data root: its bucket count recorded at creation, an older data dir adopted as bucket 0, the locks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.core import dataroot
from dispatcher.core.dataroot import DataRootBusyError, DataRootError, open_root
from dispatcher.core.store import Store


def test_a_new_root_records_its_count_and_keeps_it(tmp_path: Path) -> None:
    root = open_root(tmp_path / "data", 4)
    assert root.count == 4 and root.slots_since_ms == 0
    assert [p.name for p in root.dirs()] == ["00000", "00001", "00002", "00003"]
    assert all(p.is_dir() for p in root.dirs())
    assert json.loads((tmp_path / "data" / "layout.json").read_text())["buckets"] == 4
    again = open_root(tmp_path / "data")  # unset: as recorded
    assert again == root
    assert open_root(tmp_path / "data", 4) == root
    assert root.lock_path(2) == tmp_path / "data" / "buckets" / "00002" / "owner.lock"


def test_a_new_root_defaults_to_one_bucket_in_the_root_itself(tmp_path: Path) -> None:
    root = open_root(tmp_path / "data")
    assert root.count == 1 and root.bucket_dir(0) == tmp_path / "data"
    with pytest.raises(IndexError):
        root.bucket_dir(1)


def test_another_count_than_the_recorded_one_is_refused_naming_rebucket(tmp_path: Path) -> None:
    open_root(tmp_path / "data", 2)
    refused = r"has 2 bucket\(s\) and \[store\] buckets asks for 8.*rebucket --buckets 8"
    with pytest.raises(DataRootError, match=refused):
        open_root(tmp_path / "data", 8)


def test_a_data_dir_of_an_older_version_is_bucket_0_as_it_is(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = Store(data, map_size=1 << 20)  # what an older version left: data.mdb in the dir
    old.close_env()
    before = sorted(p.name for p in data.iterdir())
    root = open_root(data)
    assert root.count == 1 and root.bucket_dir(0) == data
    assert root.slots_since_ms > 0  # its sids carry no slot: looked up in every bucket after a rebucket
    assert sorted(p.name for p in data.iterdir()) == sorted([*before, "layout.json"])
    assert open_root(data) == root  # the adoption is recorded once


def test_an_older_data_dir_cannot_be_opened_as_several_buckets(tmp_path: Path) -> None:
    Store(tmp_path / "data", map_size=1 << 20).close_env()
    with pytest.raises(DataRootError, match=r"created before buckets.*rebucket --buckets 4"):
        open_root(tmp_path / "data", 4)
    assert not (tmp_path / "data" / "layout.json").exists()


@pytest.mark.parametrize(
    "layout",
    ["not json", '{"format": 1}', '{"format": 2, "buckets": 1}', '{"format": 1, "buckets": 3}', "[1]"],
)
def test_a_broken_layout_file_is_refused(tmp_path: Path, layout: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "layout.json").write_text(layout)
    with pytest.raises(DataRootError, match=r"layout\.json"):
        open_root(tmp_path / "data")


@pytest.mark.parametrize("count", [3, 0, 1 << 17])
def test_a_bad_count_is_refused_before_anything_is_created(tmp_path: Path, count: int) -> None:
    with pytest.raises(DataRootError, match="power of two"):
        open_root(tmp_path / "data", count)
    assert not (tmp_path / "data").exists()


def test_daemons_share_the_root_and_rebucket_needs_it_alone(tmp_path: Path) -> None:
    root = open_root(tmp_path / "data", 2)
    with (  # two daemons on one root
        dataroot.held(root),
        dataroot.held(root),
        pytest.raises(DataRootBusyError, match="a daemon is running on it"),
        dataroot.held(root, exclusive=True),
    ):
        pass
    with (
        dataroot.held(root, exclusive=True),
        pytest.raises(DataRootBusyError, match="rebucket is running on it"),
        dataroot.held(root),
    ):
        pass


_OPEN_AT = """
import sys, time
from dispatcher.core.dataroot import open_root
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
root = open_root(sys.argv[1], 16)
missing = [str(d) for d in root.dirs() if not d.is_dir()]
print("missing " + " ".join(missing) if missing else "ok")
"""


def test_workers_opening_a_new_root_together_each_find_it_whole(tmp_path: Path) -> None:
    """``--workers N`` starts N processes on a new root at once (seen in bench.cluster: one found
    a bucket directory missing, read from a layout file written before its directories). Each
    waits for the one creating the root and finds every bucket."""
    for attempt in range(3):
        path = tmp_path / f"root{attempt}"
        at = time.time() + 1.0  # all of them past their imports, then at the same instant
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, str(path), str(at)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(6)
        ]
        outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
        assert outputs == ["ok"] * 6, outputs
        assert open_root(path).count == 16
