"""The lane of a real daemon process (``wadispatch run`` with ``[cluster]``): its owner record names it, a
create sent over it is judged by the daemon's own front door (credentials, validation) and sent, and a
lane client survives the daemon's restart on the same lane port with one new connection."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import attrs
import msgspec
import pytest
import trio

from actors.transport import ConnectError
from dispatcher.core.dataroot import open_root
from dispatcher.frontdoor.forwarding import HOP_HEADER
from dispatcher.frontdoor.lane_client import LaneClient
from dispatcher.ownership.flock import read_record
from tests.helpers.etcd import free_port
from tests.helpers.processes import (
    ACCOUNT,
    NUMBERS,
    ROOT,
    TOKEN,
    config_text,
    received,
    start_simulator,
    stop,
    wait_healthy,
    wait_received,
)

CREATE = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()


@attrs.define
class Owner:
    config: Path
    port: int
    data_dir: Path
    sim_port: int
    lane_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "run", "--config", str(self.config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        wait_healthy(self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            assert self.process.returncode == 0


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Owner]:
    port, sim_port, lane_port = free_port(), free_port(), free_port()
    data_dir = tmp_path / "data"
    cluster = f'[cluster]\nowner_id = "lane-owner"\nlane_listen = "127.0.0.1:{lane_port}"\n'
    cfg = tmp_path / "dispatcher.toml"
    cfg.write_text(config_text(data_dir, port, sim_port, cluster=cluster))
    sim = start_simulator(sim_port)
    daemon = Owner(cfg, port, data_dir, sim_port, lane_port)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        stop(sim)


def _create(body: str, token: str = TOKEN) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    auth = base64.b64encode(f"{ACCOUNT}:{token}".encode())
    headers = [
        (b"authorization", b"Basic " + auth),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (HOP_HEADER, b"a-forwarder"),
    ]
    form = urlencode({"From": f"whatsapp:{NUMBERS[0]}", "To": "whatsapp:+15557770000", "Body": body})
    return b"POST", CREATE, headers, form.encode()


def _lane_of(data_dir: Path) -> str:
    root = open_root(data_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        holder = read_record(root.lock_path(0))
        if holder is not None and holder.owner_id:
            return holder.lane
        time.sleep(0.05)
    raise AssertionError("bucket 0 never got an owner")


async def test_a_create_over_the_lane_is_judged_by_the_owners_front_door_and_sent(owner: Owner) -> None:
    lane = _lane_of(owner.data_dir)
    assert lane == f"lane://127.0.0.1:{owner.lane_port}"
    client = LaneClient(lane, max_request=1 << 20, max_response=64 << 20, request_timeout=10.0)
    with trio.fail_after(60):
        refused = await client.request(*_create("wrong key", token="not-the-token-0123456789"))
        created = await client.request(*_create("over the lane"))
        sid = msgspec.json.decode(created.body)["sid"]
        fetched = await client.request(
            b"GET", f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json".encode(), _create("")[2][:1], b""
        )
        invalid = await client.request(*_create("x" * 5000))  # above WhatsApp's body limit
    await client.aclose()
    assert refused.status == 401 and msgspec.json.decode(refused.body)["code"] == 20003
    assert created.status == 201 and created.header(b"content-type") == b"application/json"
    assert fetched.status == 200 and msgspec.json.decode(fetched.body)["sid"] == sid
    assert invalid.status == 400
    got = wait_received(owner.sim_port, ["over the lane"])
    assert got == ["over the lane"]  # the refused and the invalid were never sent
    assert client.connects == 1


async def test_a_lane_client_reconnects_once_the_owner_restarts(owner: Owner) -> None:
    client = LaneClient(_lane_of(owner.data_dir), max_request=1 << 20, max_response=64 << 20)
    with trio.fail_after(90):
        assert (await client.request(*_create("before"))).status == 201
        owner.stop()
        with pytest.raises(ConnectError):  # nothing listens: nothing applied
            await client.request(*_create("while down"))
        owner.start()
        assert (await client.request(*_create("after"))).status == 201
    await client.aclose()
    assert client.connects == 2
    wait_received(owner.sim_port, ["before", "after"])
    assert sorted(received(owner.sim_port)) == ["after", "before"]
