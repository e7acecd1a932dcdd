"""CPU per message of one number actor's send loop alone: no HTTP, no front door, no webhooks.

The actor sends ``--messages`` queued messages (``--recipients`` distinct ones, so up to
``max_in_flight`` in flight) through an in-memory endpoint that answers every send at once,
and records each outcome in a real LMDB store (writer thread, fsync), as the daemon does.
The figure is process CPU (both threads) per message from the first send to the last
``sent`` committed: what the actor, the ledger writes and the group commit cost, with the
transport's cost near zero. Much less noisy than ``bench.e2e`` for a change to the send loop.

``--cluster`` runs the same loop as a cluster member runs it: behind an etcd lease's send gate
(``ownership.leaseclock.BucketGate``, asked before every send) with the Store fenced with an epoch
(checked and written in every commit); without it, the gate is ``AlwaysOpen`` and the Store
unfenced, as for one daemon.

``--on-ambiguous fail`` runs the number at-most-once: each send first commits its durable
send-started mark (``actors.inflight``), the cost such numbers pay: ``writes_per_msg`` goes
from 1 to 2, and ``writes_per_commit`` says how many writes (marks and outcomes alike) shared
each group commit.

Usage::

    .venv/bin/python -m bench.sendloop --messages 30000 [--recipients 500] [--cluster]
        [--on-ambiguous fail] [--json]

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time

import trio

from actors.credentials.token import TokenManager, login
from actors.lease import ALWAYS_OPEN, SendLease
from actors.number import NumberActor
from actors.pacing.ratelimit import TokenBucket
from actors.policy import AmbiguousPolicy, DeliveryPolicy
from actors.transport import Headers, Response
from dispatcher.channels.onprem import OnPremChannel
from dispatcher.core import ledger, logs
from dispatcher.core.bucketing import slot_of
from dispatcher.core.clock import TrioWallClock
from dispatcher.core.models import MessageRecord, new_sid
from dispatcher.core.store import Store
from dispatcher.ownership.leaseclock import BucketGate, LeaseClock, LeaseTiming

NUMBER = "+15550000001"
ACCOUNT = "AC" + "0" * 32


class InstantApi:
    """An On-Prem endpoint that answers a login with a 7-day token and every send with an id."""

    def __init__(self, wall: TrioWallClock) -> None:
        self._wall = wall
        self.sends = 0

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        await trio.lowlevel.checkpoint()
        if target == b"/v1/users/login":
            expires = dt.datetime.fromtimestamp(self._wall.now() + 7 * 86400, dt.UTC)
            users = [{"token": "t", "expires_after": expires.strftime("%Y-%m-%d %H:%M:%S+00:00")}]
            return Response(200, [], json.dumps({"users": users}).encode())
        self.sends += 1
        return Response(201, [], b'{"messages":[{"id":"wamid.%d"}],"meta":{}}' % self.sends)

    async def aclose(self) -> None:
        pass


Figures = dict[str, float | int | bool | str]


async def run(
    messages: int, recipients: int, cluster: bool = False, on_ambiguous: AmbiguousPolicy = "retry"
) -> Figures:
    """Send ``messages`` to ``recipients`` recipients; the figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="wadispatch-bench-sendloop-") as data:
        return await _run(Store(data, map_size=1 << 30), messages, recipients, cluster, on_ambiguous)


def cluster_gate() -> SendLease:
    """An etcd member's gate for a bucket, open (its lease renewed just now for a long ttl)."""
    lease = LeaseClock(LeaseTiming(ttl=3600.0, margin=0.5, send_timeout=10.0, grace=0.0))
    lease.renewed(trio.current_time(), 3600.0)
    return BucketGate(lease, opens_at=trio.current_time())


async def _run(
    store: Store, messages: int, recipients: int, cluster: bool, on_ambiguous: AmbiguousPolicy
) -> Figures:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run_writer)
        if cluster:
            store.fence(1)
        wall = TrioWallClock(start=time.time())
        api = InstantApi(wall)
        tokens = TokenManager(
            number=NUMBER,
            login=lambda: login(api, "admin", "pw", wall),
            store=store,
            wall=wall,
            refresh_before=86_400.0,
        )
        actor = NumberActor(
            number=NUMBER,
            store=store,
            transport=api,
            channel=OnPremChannel(),
            tokens=tokens,
            bucket=TokenBucket(1e9, 10**9),  # pacing out of reach: the loop's own cost
            wall=wall,
            lease=cluster_gate() if cluster else ALWAYS_OPEN,
            policy=DeliveryPolicy(on_ambiguous=on_ambiguous),
        )
        records = [
            MessageRecord(
                sid=new_sid("SM", slot_of(NUMBER)),
                account_sid=ACCOUNT,
                from_number=NUMBER,
                to_number=f"+1555{i % recipients:07d}",
                body="hello",
            )
            for i in range(messages)
        ]
        for i in range(0, messages, 1000):
            await store.write(ledger.accept_many(records[i : i + 1000]))
        began, cpu = time.perf_counter(), time.process_time()
        commits, writes = store.statistics().commits, store.statistics().writes
        await nursery.start(actor.run)
        # The counter itself, not statistics(): a snapshot sums every recipient's queue, and the
        # polling would then cost the measurement more than the code it measures.
        while actor.counts.sent < messages:  # noqa: ASYNC110 - a bench: polling is the measurement's edge
            await trio.sleep(0.005)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        commits = store.statistics().commits - commits
        writes = store.statistics().writes - writes
        actor.stop()
        store.close()
    store.close_env()
    return {
        "messages": messages,
        "recipients": recipients,
        "cluster": cluster,
        "on_ambiguous": on_ambiguous,
        "sent_per_s": round(messages / elapsed),
        "cpu_us_per_msg": round(cpu / messages * 1e6, 1),
        "commits": commits,
        "writes_per_msg": round(writes / messages, 2),
        "writes_per_commit": round(writes / max(1, commits), 1),
        "sends": api.sends,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--recipients", type=int, default=500)
    parser.add_argument("--cluster", action="store_true", help="behind a lease gate, the Store fenced")
    parser.add_argument(
        "--on-ambiguous",
        choices=("retry", "fail"),
        default="retry",
        help="the number's policy: fail marks each send durably before it goes out",
    )
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args()
    if args.messages < 1 or args.recipients < 1:
        parser.error("--messages and --recipients must be >= 1")
    logs.configure("warning")
    result = trio.run(run, args.messages, args.recipients, args.cluster, args.on_ambiguous)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>16}: {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
