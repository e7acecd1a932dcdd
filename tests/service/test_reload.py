"""Live reload (admin route and SIGHUP): add, remove, retune and replace numbers without a restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import structlog
import trio

from dispatcher import config as configuration
from dispatcher.core.store import number_key
from dispatcher.service.daemon import Running, run_daemon
from dispatcher.service.sdnotify import Notifier
from tests.helpers.daemon import ACCOUNT, ADMIN, ADMIN_TOKEN, TOKEN, messages_path, running_daemon
from tests.helpers.systemd import FakeSystemd

N1, N2, N3, N4 = "+15550000001", "+15550000002", "+15550000003", "+15550000004"


def config_text(
    data_dir: Path, numbers: dict[str, str], *, drain: float = 2.0, listen: str = "127.0.0.1:0"
) -> str:
    """``numbers``: number -> extra TOML lines for it."""
    blocks = "".join(
        f"""
[[numbers]]
number = "{n}"
account = "{ACCOUNT}"
simulated = true
password = {{ value = "Sandbox-Passw0rd!" }}
webhook_secret = {{ value = "hook-{n[-1]}-secret-0123" }}
{extra}
"""
        for n, extra in numbers.items()
    )
    return f"""
[server]
listen = "{listen}"
graceful_timeout = 1.0
drain_timeout = {drain}
[store]
data_dir = "{data_dir}"
map_size_mb = 64
[simulator]
listen = "127.0.0.1:0"
[admin]
token = {{ value = "{ADMIN_TOKEN}" }}
[[accounts]]
sid = "{ACCOUNT}"
auth_token = {{ value = "{TOKEN}" }}
{blocks}
"""


class ConfigFile:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "dispatcher.toml"
        self.data = tmp_path / "data"

    def write(self, numbers: dict[str, str], **kw: object) -> configuration.Config:
        self.path.write_text(config_text(self.data, numbers, **kw))  # type: ignore[arg-type]
        return configuration.load(self.path)

    def load(self) -> configuration.Config:
        return configuration.load(self.path)


async def send(client: httpx.AsyncClient, frm: str, body: str) -> httpx.Response:
    return await client.post(
        messages_path(), data={"From": f"whatsapp:{frm}", "To": "whatsapp:+15551234567", "Body": body}
    )


async def reload(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/admin/v1/reload", headers=ADMIN, auth=None)


async def wait_received(daemon: Running, number: str, count: int) -> list[str]:
    assert daemon.simulator is not None
    with trio.fail_after(15):
        while True:
            got = [r.content for r in daemon.simulator.received(number)]
            if len(got) >= count:
                return got
            await trio.sleep(0.02)


async def test_added_number_starts_sending(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: ""}), reload_config=cfg.load) as (daemon, client):
            assert (await send(client, N2, "too early")).json()["code"] == 63007
            cfg.write({N1: "", N2: ""})
            resp = await reload(client)
            assert resp.status_code == 200, resp.text
            assert resp.json() == {
                "ok": True,
                "added": [N2],
                "removed": [],
                "replaced": [],
                "retuned": [],
                "restart_needed": [],
                "error": None,
            }
            assert (await send(client, N2, "hello from the new number")).status_code == 201
            assert await wait_received(daemon, N2, 1) == ["hello from the new number"]
            status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
            assert [n["number"] for n in status["numbers"]] == [N1, N2]
            assert (
                'wadispatch_messages_accepted_total{number="+15550000002"} 1.0'
                in (await client.get("/metrics")).text
            )


async def test_removed_number_keeps_its_outbox_until_it_comes_back(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(40):
        async with running_daemon(cfg.write({N1: "", N2: ""}, drain=0.5), reload_config=cfg.load) as (
            daemon,
            client,
        ):
            await client.post("/admin/v1/numbers/15550000002/pause", headers=ADMIN, auth=None)
            for i in range(3):
                assert (await send(client, N2, f"kept {i}")).status_code == 201
            cfg.write({N1: ""}, drain=0.5)
            resp = await reload(client)
            assert resp.json()["removed"] == [N2]
            # Intake refuses it at once; the paused actor could not drain, so the outbox stays.
            assert (await send(client, N2, "refused")).json()["code"] == 63007
            assert daemon.supervisor.actor(N2) is None
            assert daemon.store.count(b"outbox", number_key(N2)) == 3
            assert daemon.simulator is not None and daemon.simulator.received(N2) == []
            # The other number never noticed.
            assert (await send(client, N1, "still here")).status_code == 201
            await wait_received(daemon, N1, 1)
            cfg.write({N1: "", N2: ""}, drain=0.5)
            assert (await reload(client)).json()["added"] == [N2]
            assert await wait_received(daemon, N2, 3) == ["kept 0", "kept 1", "kept 2"]


async def test_removed_number_drains_its_outbox_before_stopping(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(40):
        async with running_daemon(
            cfg.write({N1: "", N2: "rate = 20.0\nburst = 2"}), reload_config=cfg.load
        ) as (
            daemon,
            client,
        ):
            for i in range(6):
                assert (await send(client, N2, f"m{i}")).status_code == 201
            cfg.write({N1: ""})
            assert (await reload(client)).json()["removed"] == [N2]
            assert daemon.store.count(b"outbox", number_key(N2)) == 0
            assert await wait_received(daemon, N2, 6) == [f"m{i}" for i in range(6)]


async def test_rate_change_retunes_the_running_actor(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: "rate = 20.0\nburst = 60"}), reload_config=cfg.load) as (
            daemon,
            client,
        ):
            before = daemon.supervisor.actor(N1)
            cfg.write({N1: "rate = 5.0\nburst = 10\nstatus_callback = 'https://example.com/cb'"})
            assert (await reload(client)).json()["retuned"] == [N1]
            after = daemon.supervisor.actor(N1)
            assert after is before and after is not None
            assert (after.bucket.rate, after.bucket.burst) == (5.0, 10)
            assert daemon.directory.get(N1).status_callback == "https://example.com/cb"


async def test_changed_credentials_replace_the_actor_without_losing_messages(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: ""}), reload_config=cfg.load) as (daemon, client):
            before = daemon.supervisor.actor(N1)
            await client.post("/admin/v1/numbers/15550000001/pause", headers=ADMIN, auth=None)
            assert (await send(client, N1, "queued across the swap")).status_code == 201
            cfg.write({N1: 'username = "operator"\nmax_in_flight = 4'})
            assert (await reload(client)).json()["replaced"] == [N1]
            after = daemon.supervisor.actor(N1)
            assert after is not None and after is not before and after.paused  # the pause carried over
            await client.post("/admin/v1/numbers/15550000001/resume", headers=ADMIN, auth=None)
            assert await wait_received(daemon, N1, 1) == ["queued across the swap"]


async def test_invalid_config_is_rejected_and_the_old_one_keeps_running(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: ""}), reload_config=cfg.load) as (daemon, client):
            good = cfg.path.read_text()
            for broken, error in [
                (good.replace('account = "AC', 'acount = "AC'), "numbers[0].acount: unknown key"),
                (good.replace("drain_timeout = 2.0", "drain_timeout = -1"), "server.drain_timeout"),
                ("[[numbers]\n", "not valid TOML"),
                (good + '\n[[numbers]]\nnumber = "+15550000001"\n', "numbers[1]"),
            ]:
                cfg.path.write_text(broken)
                with structlog.testing.capture_logs() as logs:
                    resp = await reload(client)
                assert resp.status_code == 422
                assert resp.json()["ok"] is False and error in resp.json()["error"]
                assert (
                    next(e for e in logs if e["event"] == "config.reload_rejected")["kept"]
                    == "running config"
                )
            cfg.path.unlink()
            assert "cannot read config" in (await reload(client)).json()["error"]
            assert (await send(client, N1, "still serving")).status_code == 201
            await wait_received(daemon, N1, 1)


async def test_sections_that_need_a_restart_are_reported(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    with trio.fail_after(30):
        async with running_daemon(cfg.write({N1: ""}), reload_config=cfg.load) as (_, client):
            cfg.write({N1: ""}, listen="127.0.0.1:1")
            body = (await reload(client)).json()
            assert body["ok"] and body["restart_needed"] == ["server"]


async def test_sighup_reloads_between_reloading_and_ready(tmp_path: Path) -> None:
    cfg = ConfigFile(tmp_path)
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                daemon: Running = await nursery.start(
                    lambda task_status: run_daemon(
                        cfg.write({N1: ""}),
                        reload_config=cfg.load,
                        notifier=Notifier(str(tmp_path / "notify.sock")),
                        task_status=task_status,
                    )
                )
                assert [m for m in fake.messages() if "READY" in m]
                cfg.write({N1: "", N3: ""})
                os.kill(os.getpid(), signal.SIGHUP)
                while daemon.supervisor.actor(N3) is None:  # noqa: ASYNC110 - polling the daemon state
                    await trio.sleep(0.02)
                with trio.fail_after(5):
                    while True:
                        messages = fake.messages()
                        if any("READY" in m for m in messages):
                            break
                        await trio.sleep(0.02)
                assert messages[0]["RELOADING"] == "1" and int(messages[0]["MONOTONIC_USEC"]) > 0
                assert messages[-1] == {"READY": "1", "STATUS": "reloaded"}
                daemon.shutdown.set()
    finally:
        fake.close()
