"""Fixtures of the composition root's tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _gc_defaults() -> Iterator[None]:
    # `wadispatch run` in-process (test_process, test_runtime) tunes the collector for the daemon: undo it.
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
