"""Start a real daemon (front door on 127.0.0.1:0, embedded simulator) inside a test's trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from dispatcher import config as configuration
from dispatcher.service.daemon import Running, run_daemon
from tests.helpers.configs import ACCOUNT, cloud_table

TOKEN = "sandbox-auth-token"
NUMBERS = ("+15550000001", "+15550000002", "+15550000003")
ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
"""The admin API's credential, as request headers."""
ADMIN_SECTION = f'[admin]\ntoken = {{ value = "{ADMIN_TOKEN}" }}\n'
# The Cloud number of ``mixed_config``.
CLOUD = "+15550009999"
PNID = "106540352242922"
CLOUD_TOKEN = "EAAsystemuser"
SECRET = "app-secret-0123456789"
VERIFY = "verify-me-0123456789"
CUSTOMER = "+16505551234"


def sandbox_config(
    data_dir: Path,
    *,
    rate: float = 20.0,
    burst: int = 60,
    extra: str = "",
    number_extra: str = "",
    simulator_extra: str = "",
    numbers: Sequence[str] = NUMBERS,
    buckets: int | None = None,
) -> configuration.Config:
    """``extra`` is appended to the file; ``number_extra`` / ``simulator_extra`` to those tables;
    ``numbers``: the simulated senders (the sandbox's three by default); ``buckets``: the data
    root's bucket count (``[store] buckets``)."""
    numbers = "".join(
        f"""
[[numbers]]
number = "{n}"
account = "{ACCOUNT}"
simulated = true
password = {{ value = "Sandbox-Passw0rd!" }}
webhook_secret = {{ value = "hook-{i}-secret-0123" }}
rate = {rate}
burst = {burst}
{number_extra}
"""
        for i, n in enumerate(numbers, 1)
    )
    text = f"""
[server]
listen = "127.0.0.1:0"
graceful_timeout = 1.0
drain_timeout = 2.0
[store]
data_dir = "{data_dir}"
map_size_mb = 64
{"" if buckets is None else f"buckets = {buckets}"}
[simulator]
listen = "127.0.0.1:0"
rate = {rate}
burst = {burst}
{simulator_extra}
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
{numbers}
{extra}
"""
    return configuration.loads(text)


def admin_config(data_dir: Path, **kw: Any) -> configuration.Config:
    """The sandbox with the admin API (``ADMIN_TOKEN``); ``kw`` as for ``sandbox_config``."""
    return sandbox_config(data_dir, extra=ADMIN_SECTION, **kw)


def mixed_config(
    data_dir: Path,
    cloud: dict[str, object] | None = None,
    extra_sections: str = "",
    buckets: int | None = None,
) -> configuration.Config:
    """The sandbox plus a simulated Cloud number ``CLOUD``; ``cloud`` adds keys to its ``[numbers.cloud]``."""
    table = cloud_table(
        CLOUD,
        phone_number_id=PNID,
        access_token=CLOUD_TOKEN,
        app_secret=SECRET,
        verify_token=VERIFY,
        simulated=True,
        cloud=cloud,
    )
    return sandbox_config(data_dir, extra=extra_sections + table, buckets=buckets)


@asynccontextmanager
async def running_daemon(
    cfg: configuration.Config, **options: Any
) -> AsyncIterator[tuple[Running, httpx.AsyncClient]]:
    """``options`` go to run_daemon (reload_config, notifier, ...)."""
    async with trio.open_nursery() as nursery:
        daemon: Running = await nursery.start(
            lambda task_status: run_daemon(cfg, handle_signals=False, task_status=task_status, **options)
        )
        async with httpx.AsyncClient(base_url=daemon.url, auth=(ACCOUNT, TOKEN), timeout=10.0) as client:
            try:
                yield daemon, client
            finally:
                daemon.shutdown.set()


def messages_path(sid: str | None = None) -> str:
    base = f"/2010-04-01/Accounts/{ACCOUNT}/Messages"
    return f"{base}.json" if sid is None else f"{base}/{sid}.json"
