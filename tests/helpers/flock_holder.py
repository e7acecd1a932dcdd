"""``python -m tests.helpers.flock_holder ROOT BUCKETS OWNER_ID``: a process that owns buckets by flock.

For the handover tests: it prints ``gained B EPOCH`` / ``lost B`` lines as they happen and
runs until killed (or SIGTERM: then it lets go of everything cleanly).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio

from actors.lease import SendLease
from dispatcher.core import logs
from dispatcher.ownership.flock import FlockOwnership


class _PrintingHost:
    async def gained(self, bucket: int, epoch: int, gate: SendLease) -> None:
        sys.stdout.write(f"gained {bucket} {epoch}\n")
        sys.stdout.flush()

    def suspend(self, bucket: int) -> None:
        raise AssertionError("a flock claim never lapses while its process lives")

    def resume(self, bucket: int) -> None:
        raise AssertionError("a flock claim never lapses while its process lives")

    async def lost(self, bucket: int) -> None:
        sys.stdout.write(f"lost {bucket}\n")
        sys.stdout.flush()


def lock_path(root: Path, bucket: int) -> Path:
    return root / f"bucket-{bucket}.lock"


async def main(root: Path, buckets: int, owner_id: str) -> None:
    ownership = FlockOwnership(
        host=_PrintingHost(),
        buckets=buckets,
        lock_path=lambda b: lock_path(root, b),
        members_dir=root / "members",
        owner_id=owner_id,
        address=f"http://127.0.0.1/{owner_id}",
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(ownership.run)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            async for _ in signals:
                ownership.stop()
                break


if __name__ == "__main__":
    logs.configure("error")  # stdout carries the gained/lost lines
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
