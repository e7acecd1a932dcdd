"""A daemon on a data root of four buckets, over real HTTP with the real twilio SDK: creates land in
their sender's bucket, WhatsApp's webhooks (On-Prem by path, Cloud by phone_number_id) find it, and
the SDK lists (paging across buckets) and fetches as from one store."""

from __future__ import annotations

from pathlib import Path

import trio
from twilio.rest import Client

from dispatcher.core import ledger
from dispatcher.core.bucketing import bucket_of
from dispatcher.core.dataroot import open_root
from tests.helpers.daemon import ACCOUNT, CLOUD, NUMBERS, TOKEN, messages_path, mixed_config, running_daemon

SENDERS = (*NUMBERS, CLOUD)
TO = "whatsapp:+16505551234"


async def test_a_four_bucket_daemon_serves_the_twilio_sdk_as_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with running_daemon(mixed_config(data, buckets=4)) as (running, client):
            assert running.buckets.count == 4
            created: list[str] = []
            for round_ in range(3):
                for sender in SENDERS:
                    resp = await client.post(
                        messages_path(), data={"To": TO, "From": f"whatsapp:{sender}", "Body": f"r{round_}"}
                    )
                    assert resp.status_code == 201, resp.text
                    created.append(resp.json()["sid"])
                    await trio.sleep(0.002)  # distinct creation ms: the listing order is the creation order
            for sid in created:  # every status came back by webhook, into the sender's bucket
                while (await client.get(messages_path(sid))).json()["status"] not in ("delivered", "read"):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            by_bucket = {
                sid: [
                    i for i, s in enumerate(running.buckets.stores) if s.get(b"messages", ledger.sid_key(sid))
                ]
                for sid in created
            }

            def use_sdk() -> tuple[list[str], list[tuple[str, str, str]], list[str]]:
                api = Client(ACCOUNT, TOKEN)
                api.api.base_url = running.url
                listed = [m.sid for m in api.messages.list(page_size=5)]
                fetched = [(m.sid, m.from_, m.status) for m in (api.messages(s).fetch() for s in created)]
                cloud_only = [m.sid for m in api.messages.list(from_=f"whatsapp:{CLOUD}", page_size=2)]
                return listed, fetched, cloud_only

            listed, fetched, cloud_only = await trio.to_thread.run_sync(use_sdk)
    assert listed == created[::-1]  # 12 messages, pages of 5 merged from three buckets
    assert [f[0] for f in fetched] == created and {f[2] for f in fetched} <= {"delivered", "read"}
    assert (
        cloud_only
        == [sid for sid, f in zip(created, fetched, strict=True) if f[1] == f"whatsapp:{CLOUD}"][::-1]
    )
    for sid, (_, sender, _) in zip(created, fetched, strict=True):
        assert by_bucket[sid] == [bucket_of(sender.removeprefix("whatsapp:"), 4)]
    assert {bucket_of(n, 4) for n in SENDERS} == {1, 2, 3}
    root = open_root(data)  # recorded: a restart needs no setting
    assert root.count == 4 and all((d / "data.mdb").exists() for d in root.dirs())
