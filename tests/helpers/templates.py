"""WABA templates in tests: a daemon with a simulated WABA and one Cloud number of it, and real
template shapes (tests/corpus/templates, each with its ``_source``) to seed the simulator with."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from dispatcher import config as configuration
from dispatcher.core.wa_template import stable_sid
from tests.helpers.configs import cloud_table
from tests.helpers.daemon import ADMIN_SECTION, CLOUD, CLOUD_TOKEN, PNID, SECRET, VERIFY, sandbox_config

WABA = "102290129340398"
WABA_TOKEN = "EAAwabasystemuser"
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "templates"


def waba_table(*, on_paused: str = "wait", sync_interval: float = 3600.0, app_id: str | None = None) -> str:
    app = f'app_id = "{app_id}"' if app_id is not None else ""
    return f"""
[[wabas]]
id = "{WABA}"
account = "AC00000000000000000000000000000001"
access_token = {{ value = "{WABA_TOKEN}" }}
simulated = true
on_paused = "{on_paused}"
sync_interval = {sync_interval}
{app}
"""


def waba_config(
    data_dir: Path, *, on_paused: str = "wait", extra: str = "", app_id: str | None = None
) -> configuration.Config:
    """The sandbox, the admin API, a simulated WABA and the Cloud number ``CLOUD`` of it."""
    number = cloud_table(
        CLOUD,
        phone_number_id=PNID,
        access_token=CLOUD_TOKEN,
        app_secret=SECRET,
        verify_token=VERIFY,
        simulated=True,
        waba=WABA,
    )
    table = waba_table(on_paused=on_paused, app_id=app_id)
    return sandbox_config(data_dir, extra=ADMIN_SECTION + table + number + extra)


def corpus(name: str) -> dict[str, Any]:
    """A template of tests/corpus/templates, as Graph's create takes it (its ``_source`` checked)."""
    doc: dict[str, Any] = json.loads((CORPUS / f"{name}.json").read_text())
    assert doc.pop("_source"), f"{name}: every corpus file names its source"
    return doc


def sid_of(doc: dict[str, Any]) -> str:
    return stable_sid(WABA, doc["name"], doc["language"])


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - a real daemon on the real clock
            await trio.sleep(0.02)
