"""A BucketHost that records what an Ownership told it, for ownership tests."""

from __future__ import annotations

from typing import final

import trio

from actors.lease import SendLease


@final
class RecordingHost:
    """Keeps the buckets it was given (with epoch and gate) and the order of gains and losses.

    ``drain``: seconds ``lost`` takes (a bucket's sends finishing)."""

    def __init__(self, drain: float = 0.0) -> None:
        self.buckets: dict[int, tuple[int, SendLease]] = {}
        self.events: list[tuple[str, int]] = []
        self.drain = drain
        self.suspended: set[int] = set()
        self.changed = trio.Event()

    async def gained(self, bucket: int, epoch: int, gate: SendLease) -> None:
        assert bucket not in self.buckets, f"bucket {bucket} gained twice"
        self.buckets[bucket] = (epoch, gate)
        self.events.append(("gained", bucket))
        self._changed()

    async def lost(self, bucket: int) -> None:
        if self.drain:
            await trio.sleep(self.drain)
        del self.buckets[bucket]
        self.events.append(("lost", bucket))
        self._changed()

    def suspend(self, bucket: int) -> None:
        self.suspended.add(bucket)
        self.events.append(("suspended", bucket))

    def resume(self, bucket: int) -> None:
        self.suspended.discard(bucket)
        self.events.append(("resumed", bucket))

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def epochs(self) -> dict[int, int]:
        return {b: epoch for b, (epoch, _) in self.buckets.items()}
