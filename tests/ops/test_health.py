"""/healthz is public: a degraded number shows its state and a reason code, the details only to the admin.

(The ``storage`` code over real sockets: tests/test_storage_failure.py.)"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.helpers.daemon import ADMIN, ADMIN_TOKEN, admin_config, running_daemon

DETAIL = "crash loop: 5 crashes in 60s, last OSError('/var/lib/wadispatch: token abc123 leaked')"


async def test_the_public_page_says_degraded_and_a_code_the_admin_sees_why(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            daemon.supervisor.mark_degraded("+15550000002", DETAIL, "crash_loop")
            public = await client.get("/healthz", auth=None)
            assert public.status_code == 503
            assert public.json() == {
                "status": "degraded",
                "numbers": {"+15550000001": "running", "+15550000002": "degraded", "+15550000003": "running"},
                "degraded": {"+15550000002": "crash_loop"},
            }
            assert "abc123" not in public.text and "OSError" not in public.text
            for header in ("Bearer wrong-token-0123456789", "Bearer", f"Basic {ADMIN_TOKEN}"):
                other = await client.get("/healthz", headers={"Authorization": header}, auth=None)
                assert "details" not in other.json(), header
            admin = await client.get("/healthz", headers=ADMIN, auth=None)
            assert admin.status_code == 503
            assert admin.json()["degraded"] == {"+15550000002": "crash_loop"}
            assert admin.json()["details"] == {"+15550000002": DETAIL}
            status = await client.get("/admin/v1/status", headers=ADMIN, auth=None)
            [n2] = [n for n in status.json()["numbers"] if n["number"] == "+15550000002"]
            assert n2["degraded"] == DETAIL
            daemon.supervisor.clear_degraded("+15550000002")
            healthy = await client.get("/healthz", auth=None)
            assert healthy.status_code == 200 and healthy.json()["degraded"] == {}
