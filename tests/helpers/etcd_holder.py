"""``python -m tests.helpers.etcd_holder OWNER_ID BUCKETS ENDPOINT...``: an etcd owner that "sends".

For the etcd ownership tests: it owns buckets through ``EtcdOwnership`` and, for every
bucket it owns, writes ``send BUCKET EPOCH WALLTIME`` every 20 ms while the bucket's gate
lets a send start (what an actor would do), plus ``gained``/``lost`` lines. Two owners'
``send`` lines for one bucket must never interleave in time. Runs until SIGTERM (lets go
cleanly) or until killed. Timing: ttl 2 s, margin 0.2 s, send_timeout 0.3 s, grace 0.5 s.
"""

from __future__ import annotations

import signal
import sys
import time

import httpx
import trio

from actors.lease import SendLease
from dispatcher.core import logs
from dispatcher.ownership.etcd import EtcdOwnership
from dispatcher.ownership.etcd_client import EtcdClient
from dispatcher.ownership.leaseclock import LeaseTiming

TIMING = LeaseTiming(ttl=2.0, margin=0.2, send_timeout=0.3, grace=0.5)


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


class _SendingHost:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: dict[int, trio.CancelScope] = {}

    async def gained(self, bucket: int, epoch: int, gate: SendLease) -> None:
        say("gained", bucket, epoch, f"{time.time():.3f}")
        self._scopes[bucket] = scope = trio.CancelScope()
        self._nursery.start_soon(self._send, bucket, epoch, gate, scope)

    def suspend(self, bucket: int) -> None:
        say("suspended", bucket, f"{time.time():.3f}")

    def resume(self, bucket: int) -> None:
        say("resumed", bucket, f"{time.time():.3f}")

    async def lost(self, bucket: int) -> None:
        self._scopes.pop(bucket).cancel()
        say("lost", bucket, f"{time.time():.3f}")

    async def _send(self, bucket: int, epoch: int, gate: SendLease, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                if trio.current_time() < gate.send_until():
                    say("send", bucket, epoch, f"{time.time():.3f}")
                    await trio.sleep(0.02)
                else:
                    await gate.wait_open()


async def main(owner_id: str, buckets: int, endpoints: list[str]) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http, trio.open_nursery() as nursery:
        client = EtcdClient(client=http, endpoints=endpoints, timeout=0.5)
        ownership = EtcdOwnership(
            host=_SendingHost(nursery),
            client=client,
            cluster="test",
            buckets=buckets,
            owner_id=owner_id,
            address=f"http://127.0.0.1/{owner_id}",
            timing=TIMING,
            poll_interval=0.2,
            retry_delay=0.2,
        )
        await nursery.start(ownership.run)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            say("ready")
            async for _ in signals:
                ownership.stop()
                break
        nursery.cancel_scope.deadline = trio.current_time() + 5.0


if __name__ == "__main__":
    logs.configure("error")
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3:])
