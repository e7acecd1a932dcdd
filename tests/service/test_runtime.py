"""Interpreter tuning for the daemon process: what it sets, and that `wadispatch run` applies it."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from dispatcher.cli import main
from dispatcher.service import runtime
from tests.helpers.daemon import running_daemon, sandbox_config
from tests.service.test_process import write_config


@pytest.fixture
def interpreter_defaults() -> Iterator[None]:
    """The tuning is process-wide: put the test process back as it was."""
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_tune_freezes_startup_and_sets_the_gc_threshold_and_switch_interval(
    interpreter_defaults: None,
) -> None:
    sys.setswitchinterval(0.005)
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    kept = object.__new__(type("Cyclic", (), {}))  # a tracked object alive at "startup"
    runtime.tune()
    assert sys.getswitchinterval() == pytest.approx(runtime.SWITCH_INTERVAL)
    assert gc.get_threshold() == (runtime.GEN0_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0
    assert kept not in gc.get_objects()  # frozen: later collections never scan it


def test_settle_freezes_what_survived_startup(interpreter_defaults: None) -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # tracked containers, alive across the collection
    runtime.settle()
    assert gc.get_freeze_count() >= len(kept)
    assert not any(obj is kept[0] for obj in gc.get_objects())  # out of every generation the GC walks


async def test_on_ready_runs_once_before_started(tmp_path: Path) -> None:
    calls: list[str] = []
    cfg = sandbox_config(tmp_path / "data")
    async with running_daemon(cfg, on_ready=lambda: calls.append("ready")) as (_daemon, client):
        calls.append("started")
        assert (await client.get("/healthz")).status_code == 200
    assert calls == ["ready", "started"]


def test_run_command_tunes_then_settles_once_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interpreter_defaults: None
) -> None:
    steps: list[str] = []

    async def fake_run_daemon(cfg: Any, *, on_ready: Callable[[], None], **_: Any) -> None:
        steps.append("daemon starts")
        await trio.lowlevel.checkpoint()
        on_ready()

    monkeypatch.setattr("dispatcher.service.daemon.run_daemon", fake_run_daemon)
    monkeypatch.setattr(runtime, "tune", lambda: steps.append("tune"))
    monkeypatch.setattr(runtime, "settle", lambda: steps.append("settle"))
    assert main(["run", "--config", str(write_config(tmp_path))]) == 0
    assert steps == ["tune", "daemon starts", "settle"]
