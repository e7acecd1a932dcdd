from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trio

from dispatcher.core import logs
from dispatcher.core.store import Store


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    # Tests read logs through structlog.testing.capture_logs(), which needs an uncached logger.
    logs.configure("warning", cache=False)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    """A real LMDB store committing on the trio thread, so MockClock tests stay deterministic."""
    s = Store(store_path, map_size=64 << 20, commit_in_thread=False)
    yield s
    s.close_env()


@pytest.fixture
async def writer(store: Store, nursery: trio.Nursery) -> Store:
    await nursery.start(store.run_writer)
    return store
