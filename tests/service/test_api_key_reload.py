"""API keys follow a live reload: a key added is accepted at once, a key removed is refused at once."""

from __future__ import annotations

from pathlib import Path

import trio

from dispatcher import config as configuration
from tests.helpers.daemon import running_daemon
from tests.service.test_reload import N1, config_text, reload, send

KEY = "SK" + "a" * 32
KEY_BLOCK = f"""
[[accounts.api_keys]]
sid = "{KEY}"
secret = {{ value = "rotating-secret-0123" }}
"""


async def test_api_keys_are_added_and_revoked_by_reload(tmp_path: Path) -> None:
    path = tmp_path / "dispatcher.toml"

    def write(with_key: bool) -> configuration.Config:
        path.write_text(config_text(tmp_path / "data", {N1: ""}) + (KEY_BLOCK if with_key else ""))
        return configuration.load(path)

    with trio.fail_after(30):
        async with running_daemon(write(False), reload_config=lambda: configuration.load(path)) as (
            _,
            client,
        ):
            client.auth = (KEY, "rotating-secret-0123")
            assert (await send(client, N1, "before")).status_code == 401
            write(True)
            assert (await reload(client)).json()["ok"] is True
            assert (await send(client, N1, "with the key")).status_code == 201
            write(False)
            assert (await reload(client)).json()["ok"] is True
            resp = await send(client, N1, "revoked")
            assert resp.status_code == 401 and resp.json()["code"] == 20003
