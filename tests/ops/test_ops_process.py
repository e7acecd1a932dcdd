"""The daemon as systemd runs it: secrets from credential files, sd_notify, SIGHUP reload, the admin
CLI, /metrics, SIGTERM; then the whole log is checked: JSON lines, state changes, no secret anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.helpers.daemon import ACCOUNT, messages_path
from tests.helpers.systemd import FakeSystemd

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "auth-token": "proc-auth-token-7c1d2e",
    "wa-password": "Proc-Passw0rd!-91f3",
    "admin-token": "proc-admin-token-5a6b7c8d9e",
    "webhook-secret": "proc-hook-secret-44d1",
}


def write_config(tmp_path: Path, numbers: list[str], creds: Path) -> None:
    blocks = "".join(
        f"""
[[numbers]]
number = "{n}"
account = "{ACCOUNT}"
simulated = true
password = {{ file = "{creds}/wa-password" }}
webhook_secret = {{ file = "{creds}/webhook-secret" }}
"""
        for n in numbers
    )
    (tmp_path / "dispatcher.toml").write_text(f"""
[server]
listen = "127.0.0.1:0"
graceful_timeout = 1.0
drain_timeout = 2.0
[store]
map_size_mb = 64
[simulator]
listen = "127.0.0.1:0"
[admin]
token = {{ file = "{creds}/admin-token" }}
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ file = "{creds}/auth-token" }}
{blocks}
""")


def admin_cli(url: str, creds: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatcher",
            *argv,
            "--url",
            url,
            "--admin-token-file",
            str(creds / "admin-token"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_operations_of_a_real_process(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name, value in SECRETS.items():
        (creds / name).write_text(value + "\n")
    write_config(tmp_path, ["+15550000001"], creds)
    notify = FakeSystemd(str(tmp_path / "notify.sock"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    command = [sys.executable, "-m", "dispatcher", "run", "--config", str(tmp_path / "dispatcher.toml")]
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [*command, "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None

        async def next_event(name: str) -> dict[str, object]:
            with trio.fail_after(30):
                while True:
                    line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
                    assert line, "daemon exited"
                    lines.append(line.decode())
                    event = json.loads(line)
                    if event["event"] == name:
                        return event

        url = str((await next_event("daemon.ready"))["url"])
        ready = notify.messages()
        assert {"READY": "1", "STATUS": f"serving 1 numbers on {url}"} in ready
        assert {"WATCHDOG": "1"} in ready

        async with httpx.AsyncClient(base_url=url, auth=(ACCOUNT, SECRETS["auth-token"])) as client:
            resp = await client.post(
                messages_path(),
                data={"From": "whatsapp:+15550000001", "To": "whatsapp:+15551234567", "Body": "ops"},
            )
            assert resp.status_code == 201
            sid = resp.json()["sid"]
            status = await next_event("message.status")
            assert status["sid"] == sid and status["number"] == "+15550000001" and status["wamid"]

            # Reload: a second number appears; then an invalid config is refused.
            write_config(tmp_path, ["+15550000001", "+15550000002"], creds)
            proc.send_signal(signal.SIGHUP)
            reloaded = await next_event("config.reloaded")
            assert reloaded["added"] == ["+15550000002"]
            (tmp_path / "dispatcher.toml").write_text("[server]\nlisten = 8080\n")
            proc.send_signal(signal.SIGHUP)
            rejected = await next_event("config.reload_rejected")
            assert "server.listen" in str(rejected["error"])

            done = await trio.to_thread.run_sync(lambda: admin_cli(url, creds, "status"))
            assert done.returncode == 0 and "+15550000002" in done.stdout, done.stderr
            done = await trio.to_thread.run_sync(
                lambda: admin_cli(url, creds, "token", "refresh", "+15550000001")
            )
            assert done.returncode == 0, done.stderr
            assert (
                await client.get("/admin/v1/status", headers={"Authorization": "Bearer wrong"})
            ).status_code == 401
            metrics = (await client.get("/metrics")).text
            assert 'wadispatch_messages_accepted_total{number="+15550000001"} 1.0' in metrics

        messages = notify.messages()
        reloading = [m for m in messages if "RELOADING" in m]
        assert len(reloading) == 2 and all(int(m["MONOTONIC_USEC"]) > 0 for m in reloading)
        assert {"READY": "1", "STATUS": "reloaded"} in messages
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await trio.to_thread.run_sync(proc.wait)
        assert code == 0
        assert {"STOPPING": "1", "STATUS": "draining"} in notify.messages()
        lines.extend(proc.stdout.read().decode().splitlines(keepends=True))
        stderr = proc.stderr.read().decode()
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in lines]  # every stdout line is one JSON event
    names = {e["event"] for e in events}
    assert {"message.sent", "message.status", "admin.token_refresh", "admin.unauthorized"} <= names
    sent = next(e for e in events if e["event"] == "message.sent")
    assert sent["sid"] == sid and sent["number"] == "+15550000001" and sent["status"] == "sent"
    everything = "".join(lines) + stderr
    for name, secret in SECRETS.items():
        assert secret not in everything, f"the {name} leaked into the logs"
