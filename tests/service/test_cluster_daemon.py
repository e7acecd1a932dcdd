"""One daemon with ``[cluster]`` (flock) on a four-bucket root: it owns every bucket under epochs,
sends as usual, shows what it owns (admin status, /metrics), and lets every bucket go at shutdown."""

from __future__ import annotations

from pathlib import Path

import trio

from dispatcher.core.dataroot import open_root
from dispatcher.ownership.flock import read_record
from tests.helpers.daemon import ADMIN, ADMIN_SECTION, NUMBERS, messages_path, running_daemon, sandbox_config


async def test_a_lone_flock_daemon_owns_every_bucket_and_lets_them_go_at_shutdown(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = sandbox_config(data, extra=ADMIN_SECTION + "[cluster]\n", buckets=4)
    with trio.fail_after(60):
        async with running_daemon(cfg) as (running, client):
            assert running.ownership is not None
            assert dict(running.ownership.owned()) == {0: 1, 1: 1, 2: 1, 3: 1}
            assert len(running.supervisor.actors()) == len(NUMBERS)
            sids = []
            for sender in NUMBERS:
                resp = await client.post(
                    messages_path(),
                    data={"To": "whatsapp:+16505551234", "From": f"whatsapp:{sender}", "Body": "hi"},
                )
                assert resp.status_code == 201, resp.text
                sids.append(resp.json()["sid"])
            for sid in sids:
                while (await client.get(messages_path(sid))).json()["status"] == "queued":  # noqa: ASYNC110
                    await trio.sleep(0.02)
            status = (await client.get("/admin/v1/status", headers=ADMIN, auth=None)).json()
            assert [(b["bucket"], b["owned"], b["epoch"]) for b in status["buckets"]] == [
                (b, True, 1) for b in range(4)
            ]
            used = {running.buckets.index(n) for n in NUMBERS}
            assert all(status["buckets"][b]["recorded_epoch"] == 1 for b in used)  # written with the commits
            metrics = (await client.get("/metrics", headers=ADMIN, auth=None)).text
            assert "wadispatch_buckets_owned 4.0" in metrics
            assert "wadispatch_cluster_members 1.0" in metrics
            for counter in ("forwarded", "unowned", "failed"):  # the front door's forwarding, wired
                assert f"wadispatch_forward_{counter}_total 0.0" in metrics
    root = open_root(data)
    for bucket in range(4):
        holder = read_record(root.lock_path(bucket))
        assert holder is not None and holder.owner_id == "" and holder.epoch == 1  # let go cleanly
