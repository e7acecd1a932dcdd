"""Accepted means storable and sendable, through the real front door, actor and simulator.

Issue 12 items 1 and 10 as they were found: a StatusCallback host too long for
a key was accepted and crash-looped its number (now a 400, nothing stored, the
number keeps sending; a valid Unicode host whose origin is still too long for a
key is taken and its callbacks queued under a digest), and a 4,096-character
body with trailing whitespace went out whole and failed 63021 (now it goes out
as its 4,096 characters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import trio

from dispatcher.core import callbacks
from tests.helpers.daemon import messages_path, running_daemon, sandbox_config
from tests.helpers.messages import wait_for, wait_status

SENDER: Final = "+15550000001"
LONG_HOST_CALLBACK: Final = "http://" + "a" * 600 + ".example.com/cb"


async def test_a_callback_host_too_long_is_a_400_and_the_number_keeps_sending(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            form = {"From": f"whatsapp:{SENDER}", "To": "whatsapp:+15551234567", "Body": "hi"}
            resp = await client.post(messages_path(), data={**form, "StatusCallback": LONG_HOST_CALLBACK})
            assert resp.status_code == 400, resp.text
            assert resp.json()["code"] == 21609 and resp.json()["status"] == 400
            batch = await client.post(
                "/v1/messages:batch",
                json=[
                    {
                        "from": form["From"],
                        "to": form["To"],
                        "body": "hi",
                        "status_callback": LONG_HOST_CALLBACK,
                    }
                ],
            )
            assert batch.status_code == 200 and batch.json()["accepted"] == 0
            assert batch.json()["results"][0]["error"]["code"] == 21609
            assert daemon.store.entries(b"messages") == 0 and daemon.store.entries(b"outbox") == 0
            # The number is untouched: the next message goes, with a callback that is fine.
            ok = await client.post(
                messages_path(), data={**form, "StatusCallback": "https://hooks.example/cb"}
            )
            assert ok.status_code == 201, ok.text
            await wait_status(client, ok.json()["sid"], "read")
            assert daemon.supervisor.states()[SENDER] == "running"


async def test_a_callback_host_dns_carries_but_too_long_for_a_key_never_stops_its_number(
    tmp_path: Path,
) -> None:
    """4 labels of 56 CJK characters: 251 characters in its IDNA form, so a valid host name,
    but 675 bytes of UTF-8 in the callback's origin. The create takes it; its callbacks are
    queued under the origin's digest (``keys.part``) instead of failing the send's write."""
    callback = "https://" + ".".join(["\u4e2d" * 56] * 4) + "/cb"
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            sids = []
            for i in range(3):
                resp = await client.post(
                    messages_path(),
                    data={
                        "From": f"whatsapp:{SENDER}",
                        "To": "whatsapp:+15551234567",
                        "Body": f"m{i}",
                        "StatusCallback": callback,
                    },
                )
                assert resp.status_code == 201, resp.text
                sids.append(resp.json()["sid"])
            for sid in sids:
                await wait_status(client, sid, "read")
            assert daemon.supervisor.states()[SENDER] == "running"
            assert daemon.simulator is not None
            assert [r.content for r in daemon.simulator.received(SENDER)] == ["m0", "m1", "m2"]
            # The host does not resolve: its callbacks wait, queued under one bounded key prefix.
            prefix = callbacks.origin_prefix(callbacks.origin(callback))
            assert prefix.startswith(b"#") and len(prefix) < 100
            await wait_for(lambda: daemon.store.count(callbacks.DB, prefix) >= 1, timeout=10)


async def test_4096_characters_and_trailing_whitespace_are_sent_as_4096(tmp_path: Path) -> None:
    cfg = sandbox_config(tmp_path / "data", extra="[messaging]\nmax_body = 9000")
    with trio.fail_after(30):
        async with running_daemon(cfg) as (daemon, client):
            form = {"From": f"whatsapp:{SENDER}", "To": "whatsapp:+15551234567"}
            one = await client.post(messages_path(), data={**form, "Body": "x" * 4096 + "   "})
            assert one.status_code == 201 and one.json()["num_segments"] == "1", one.text
            assert (await wait_status(client, one.json()["sid"], "read", "failed"))["status"] == "read"
            two = await client.post(messages_path(), data={**form, "Body": "word " * 1000 + "\n"})
            assert two.status_code == 201 and two.json()["num_segments"] == "2", two.text
            assert (await wait_status(client, two.json()["sid"], "read", "failed"))["status"] == "read"
            blank = await client.post(messages_path(), data={**form, "Body": " " * 5000})
            assert blank.status_code == 400 and blank.json()["code"] == 21602
            assert daemon.simulator is not None
            received = [r.content for r in daemon.simulator.received(SENDER)]
            assert received[0] == "x" * 4096
            assert all(isinstance(c, str) and 1 <= len(c) <= 4096 for c in received)
            # Split at a space, in order, nothing but whitespace at the cut dropped.
            assert len(received) == 3 and " ".join(map(str, received[1:])).split() == ["word"] * 1000
