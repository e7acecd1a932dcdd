"""The daemon as a real process: ready, accepts, SIGTERM drains and exits 0; bad starts exit cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from dispatcher.cli import main
from dispatcher.core.store import Store
from tests.helpers.daemon import ACCOUNT, TOKEN, messages_path

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path) -> Path:
    text = (ROOT / "conf" / "dispatcher.toml").read_text()
    text = text.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"')
    path = tmp_path / "dispatcher.toml"
    path.write_text(text)
    return path


async def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    data = tmp_path / "data"
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-m", "dispatcher", "run", "--config", str(cfg), "--data-dir", str(data)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = None
        with trio.fail_after(30):
            while url is None:
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                assert line, "daemon exited before it was ready"
                event = json.loads(line)
                if event["event"] == "daemon.ready":
                    url = event["url"]
        async with httpx.AsyncClient(base_url=url, auth=(ACCOUNT, TOKEN)) as client:
            resp = await client.post(
                messages_path(),
                data={"From": "whatsapp:+15550000001", "To": "whatsapp:+15551234567", "Body": "bye"},
            )
            assert resp.status_code == 201
            sid = resp.json()["sid"]
        os.kill(proc.pid, signal.SIGTERM)
        with trio.fail_after(30):
            code = await trio.to_thread.run_sync(proc.wait)
        assert code == 0
        rest = proc.stdout.read().decode()
        assert '"event":"daemon.stopped"' in rest
        assert "sandbox-auth-token" not in rest and "Sandbox-Passw0rd!" not in rest  # secrets never logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(data)
    try:
        assert store.get(b"messages", sid.encode()) is not None
    finally:
        store.close_env()


def test_unwritable_data_dir_exits_with_a_clear_error(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["run", "--config", str(write_config(tmp_path)), "--data-dir", str(blocker / "data")])
    assert code == 3
    assert "not writable" in capsys.readouterr().err


def test_bad_listen_override_is_a_config_error(tmp_path: Path, capsys) -> None:
    code = main(["run", "--config", str(write_config(tmp_path)), "--listen", "nowhere"])
    assert code == 2 and "--listen: expected HOST:PORT" in capsys.readouterr().err
