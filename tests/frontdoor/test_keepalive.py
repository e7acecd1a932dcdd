"""Keep-alive connections to quart routes end promptly at shutdown (see frontdoor/keepalive.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import trio

from dispatcher.service.daemon import Running, run_daemon
from tests.helpers.daemon import ACCOUNT, NUMBERS, TOKEN, sandbox_config

GRACEFUL = 30.0  # hypercorn waits this long for a connection it believes busy


async def test_idle_keep_alive_connection_does_not_hold_the_shutdown(tmp_path: Path) -> None:
    base = sandbox_config(tmp_path)
    server = msgspec.structs.replace(base.server, graceful_timeout=GRACEFUL)
    cfg = msgspec.structs.replace(base, server=server)
    with trio.fail_after(GRACEFUL / 2):
        async with trio.open_nursery() as nursery:
            daemon: Running = await nursery.start(
                lambda task_status: run_daemon(cfg, handle_signals=False, task_status=task_status)
            )
            async with httpx.AsyncClient(base_url=daemon.url, auth=(ACCOUNT, TOKEN)) as client:
                created = await client.post(
                    f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
                    data={"From": f"whatsapp:{NUMBERS[0]}", "To": "whatsapp:+15551234567", "Body": "hi"},
                )
                assert created.status_code == 201
                sid = created.json()["sid"]
                for _ in range(5):  # quart routes, one keep-alive connection
                    fetched = await client.get(f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json")
                    assert fetched.status_code == 200
                    assert (await client.get("/healthz")).status_code == 200
                # The connection is idle and still open in the pool when the daemon is told to stop.
                started = trio.current_time()
                daemon.shutdown.set()
        # Everything stopped: well before hypercorn's graceful timeout would have run out.
        assert trio.current_time() - started < GRACEFUL / 3
