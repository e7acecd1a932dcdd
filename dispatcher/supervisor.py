"""Runs one NumberActor per number and restarts a crashed one; the others never notice.

An actor that raises is restarted after a full-jitter exponential backoff
(base doubling to a cap, reset once it has run stably for ``reset_after``).
Its outbox lives in LMDB, so a restart loses nothing: the new run recovers it.
Only ``Exception`` is caught: cancellation and KeyboardInterrupt always propagate.
"""

from __future__ import annotations

import random
from typing import final

import attrs
import structlog
import trio

from actors.number import NumberActor

log = structlog.get_logger()


@attrs.define(eq=False)
class _Slot:
    actor: NumberActor
    state: str = "starting"  # starting | running | restarting | stopped
    restarts: int = 0
    last_error: str | None = None


@final
class Supervisor:
    def __init__(
        self,
        actors: list[NumberActor],
        *,
        base_delay: float = 0.1,
        max_delay: float = 30.0,
        reset_after: float = 60.0,
    ) -> None:
        self._slots = {a.number: _Slot(a) for a in actors}
        self._base = base_delay
        self._cap = max_delay
        self._reset_after = reset_after
        self._stopping = False

    def actor(self, number: str) -> NumberActor | None:
        slot = self._slots.get(number)
        return None if slot is None else slot.actor

    def states(self) -> dict[str, str]:
        return {number: slot.state for number, slot in self._slots.items()}

    def restarts(self, number: str) -> int:
        return self._slots[number].restarts

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor (each recovers its outbox first), then supervise until they stop."""
        async with trio.open_nursery() as nursery:
            for slot in self._slots.values():
                await nursery.start(self._supervise, slot)
            task_status.started()

    def stop_requested(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask every actor to finish its sends in flight and return."""
        self._stopping = True
        for slot in self._slots.values():
            slot.actor.stop()

    async def _supervise(
        self, slot: _Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        delay = self._base
        first = True
        while not self.stop_requested():
            started_at = trio.current_time()
            try:
                if first:
                    first = False
                    await self._run_once(slot, task_status)
                else:
                    await self._run_once(slot, trio.TASK_STATUS_IGNORED)
            except Exception as exc:
                slot.restarts += 1
                slot.last_error = repr(exc)
                slot.state = "restarting"
                log.error("actor.crashed", number=slot.actor.number, restarts=slot.restarts, exc_info=exc)
            else:
                if self.stop_requested():
                    break
                slot.state = "restarting"
                log.warning("actor.returned", number=slot.actor.number)
            if trio.current_time() - started_at >= self._reset_after:
                delay = self._base
            await trio.sleep(random.uniform(0.0, delay))
            delay = min(self._cap, delay * 2)
        slot.state = "stopped"

    async def _run_once(self, slot: _Slot, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(slot.actor.run)
            slot.state = "running"
            task_status.started()
