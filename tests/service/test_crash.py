"""A short crash test: kill -9 the daemon twice under load; every acknowledged message is delivered
(under ``on_ambiguous = "fail"``: delivered once, or failed as ambiguous, never twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from bench.crash import crash_run


async def two_kills(workdir: Path, on_ambiguous: str) -> dict[str, Any]:
    with trio.fail_after(120):  # bounded: it stops by itself well before
        return await crash_run(
            kills=2,
            numbers=2,
            rate=200.0,
            concurrency=8,
            up_min=0.3,
            up_max=0.8,
            drain_timeout=60.0,
            seed=7,
            workdir=workdir,
            on_ambiguous=on_ambiguous,
        )


async def test_two_kills_under_load_lose_nothing(tmp_path: Path) -> None:
    result = await two_kills(tmp_path, "retry")
    assert result["restarts"] == 2
    assert result["accepted"] > 0
    assert result["lost"] == 0
    # At-least-once: a duplicate is only ever a send that was in flight when the daemon died.
    assert result["duplicates_explained"] == result["duplicated"]


async def test_two_kills_under_load_never_send_an_at_most_once_message_twice(tmp_path: Path) -> None:
    result = await two_kills(tmp_path, "fail")
    assert result["restarts"] == 2 and result["accepted"] > 0
    assert result["duplicated"] == 0  # what a kill cut off is failed as ambiguous, never resent
    # Every acknowledged message reached WhatsApp or was failed as ambiguous (30008): nothing vanished.
    assert result["lost"] == 0
    # Only sends in flight at a kill can be ambiguous: at most max_in_flight per number and kill.
    assert result["failed_ambiguous"] <= 2 * 2 * 64
