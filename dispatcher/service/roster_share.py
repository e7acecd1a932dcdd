"""The numbers onboarded at runtime, known to every daemon of a cluster.

A number onboarded while the daemons run is recorded in its bucket by the bucket's owner
(the front door forwards its admin calls there), and the owner starts its actor. Every
other daemon must know it too: its front door routes the number's webhooks by it, and
whichever daemon owns the bucket next starts its actor. One way per backend:

- ``RootRoster`` (flock: the daemons share one data root): the records are in the root.
  Each daemon reads the started ones of every bucket every ``interval``; no write of its own.
- ``EtcdRoster`` (the daemons need not share a root): the owner puts the record under
  ``/wadispatch/{cluster}/numbers/{number}`` once the number runs and deletes it when it
  stops; every daemon reads the prefix at start, again on each change its watch reports,
  and every ``interval`` in case the watch missed one.

Either way ``run`` calls ``apply`` with every started record whenever that set changes,
and the daemon starts, changes or stops what differs here (``NumberOps.sync``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, final

import msgspec
import structlog
import trio

from dispatcher.core import onboarding_state as state
from dispatcher.core.buckets import Buckets
from dispatcher.core.onboarding_state import OnboardRecord
from dispatcher.ownership.etcd_client import EtcdClient, EtcdError

log = structlog.get_logger()

Apply = Callable[[Sequence[OnboardRecord]], Awaitable[None]]

ROOT_INTERVAL: Final = 1.0
ETCD_INTERVAL: Final = 30.0
RETRY_DELAY: Final = 1.0

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(OnboardRecord)


class SharedRoster(Protocol):
    async def publish(self, record: OnboardRecord) -> None:
        """``record``'s number runs now: every daemon is to know it (raises if it cannot be told)."""
        ...

    async def withdraw(self, number: str) -> None:
        """``number`` runs no more: every daemon is to forget it (raises if it cannot be told)."""
        ...

    async def run(
        self, apply: Apply, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Call ``apply`` with every started record now, then whenever they change; ``started()``
        after the first attempt (the daemon starts even when the records cannot be read yet)."""
        ...


@final
class RootRoster:
    """The started records of a data root every daemon shares (flock)."""

    def __init__(self, buckets: Buckets, *, interval: float = ROOT_INTERVAL) -> None:
        self._buckets = buckets
        self._interval = interval

    async def publish(self, record: OnboardRecord) -> None:
        """Nothing to do: the owner's own commit of the record is in the shared root."""

    async def withdraw(self, number: str) -> None:
        """Nothing to do: the owner deletes the record from the shared root."""

    def started(self) -> list[OnboardRecord]:
        found = (r for store in self._buckets.stores for r in state.every(store))
        return sorted((r for r in found if r.is_done(state.START)), key=lambda r: r.number)

    async def run(
        self, apply: Apply, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        last: list[OnboardRecord] | None = None
        while True:
            records = self.started()
            if records != last:
                await apply(records)
            if last is None:
                task_status.started()
            last = records
            await trio.sleep(self._interval)


@final
class EtcdRoster:
    """The started records as keys of the cluster's etcd."""

    def __init__(
        self,
        client: EtcdClient,
        *,
        cluster: str,
        interval: float = ETCD_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self._client = client
        self._prefix = f"/wadispatch/{cluster}/numbers/".encode()
        self._interval = interval
        self._retry = retry_delay
        self._last: list[OnboardRecord] | None = None

    def _key(self, number: str) -> bytes:
        return self._prefix + number.encode()

    async def publish(self, record: OnboardRecord) -> None:
        await self._client.put(self._key(record.number), _encoder.encode(record), 0)
        log.info("roster.published", number=record.number)

    async def withdraw(self, number: str) -> None:
        await self._client.delete(self._key(number))
        log.info("roster.withdrawn", number=number)

    async def run(
        self, apply: Apply, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        first = True
        while True:
            try:
                revision = await self._read(apply)
            except EtcdError as exc:
                log.warning("roster.read_failed", error=str(exc)[:300])
                revision = None
            if first:
                task_status.started()
                first = False
            if revision is None:
                await trio.sleep(self._retry)
                continue
            with trio.move_on_after(self._interval):  # then read again, whatever the watch said
                try:
                    async for _ in self._client.watch_prefix(self._prefix, revision + 1):
                        revision = await self._read(apply)
                except EtcdError as exc:
                    log.info("roster.watch_ended", error=str(exc)[:300])
                    await trio.sleep(self._retry)

    async def _read(self, apply: Apply) -> int:
        """Every record under the prefix, applied if they changed; the revision they were read at."""
        kvs, revision = await self._client.range_prefix(self._prefix)
        records: list[OnboardRecord] = []
        for kv in kvs:
            try:
                records.append(_decoder.decode(kv.value_bytes))
            except msgspec.DecodeError as exc:
                log.error(
                    "roster.undecodable", key=kv.key_bytes[-40:].decode(errors="replace"), error=str(exc)
                )
        records.sort(key=lambda r: r.number)
        if records != self._last:
            await apply(records)
            self._last = records
        return revision
