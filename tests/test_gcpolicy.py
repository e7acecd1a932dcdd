"""The daemon's collector settings: startup frozen, young collections every 10,000 allocations."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from dispatcher import gcpolicy
from dispatcher.cli import main
from tests.test_process import write_config


def test_configure_freezes_startup_and_raises_the_young_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    kept = object.__new__(type("Cyclic", (), {}))  # a tracked object alive at "startup"
    gcpolicy.configure()
    assert gc.get_threshold() == (gcpolicy.GEN0_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0
    assert kept not in gc.get_objects()  # frozen: later collections never scan it


def test_wadispatch_run_configures_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(gcpolicy, "configure", lambda: calls.append(None))
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "--config", str(write_config(tmp_path)), "--data-dir", str(blocker / "data")]) == 3
    assert calls == [None]
