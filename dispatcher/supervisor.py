"""Runs one NumberActor per number and restarts a crashed one; the others never notice.

An actor that raises is restarted after a full-jitter exponential backoff
(base doubling to a cap, reset once it has run stably for ``reset_after``).
Its outbox lives in LMDB, so a restart loses nothing: the new run recovers it.
Only ``Exception`` is caught: cancellation and KeyboardInterrupt always propagate.

An actor that crashes ``crash_limit`` times within ``crash_window`` seconds is
in a crash loop: it is marked degraded (``states()`` and /healthz say so, its
statistics carry the reason) and restarted only every ``degraded_delay``
seconds, so it cannot burn CPU or hammer its API; the other actors never
notice. Once a run lasts ``reset_after`` seconds it is healthy again.
"""

from __future__ import annotations

import random
from collections import deque
from typing import final

import attrs
import structlog
import trio

from actors.number import NumberActor

log = structlog.get_logger()


def _innermost(exc: BaseException) -> BaseException:
    """The error inside nested one-member exception groups (what actually went wrong)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@attrs.define(eq=False)
class _Slot:
    actor: NumberActor
    state: str = "starting"  # starting | running | restarting | stopped
    restarts: int = 0
    last_error: str | None = None
    retiring: bool = False  # removed or replaced by a live reload: stop for good
    stopped: trio.Event = attrs.Factory(trio.Event)
    wake: trio.Event = attrs.Factory(trio.Event)  # cuts a restart backoff short
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    crashes: deque[float] = attrs.Factory(deque)  # trio times of the crashes within the window
    crash_looping: bool = False


@final
class Supervisor:
    def __init__(
        self,
        actors: list[NumberActor],
        *,
        base_delay: float = 0.1,
        max_delay: float = 30.0,
        reset_after: float = 60.0,
        crash_limit: int = 5,
        crash_window: float = 60.0,
        degraded_delay: float = 60.0,
    ) -> None:
        if crash_limit < 1 or crash_window <= 0 or degraded_delay <= 0:
            raise ValueError("crash_limit must be >= 1, crash_window and degraded_delay > 0")
        self._slots = {a.number: _Slot(a) for a in actors}
        self._crash_limit = crash_limit
        self._crash_window = crash_window
        self._degraded_delay = degraded_delay
        self._base = base_delay
        self._cap = max_delay
        self._reset_after = reset_after
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._stop_event = trio.Event()

    def actor(self, number: str) -> NumberActor | None:
        slot = self._slots.get(number)
        return None if slot is None else slot.actor

    def states(self) -> dict[str, str]:
        """starting | running | restarting | degraded | stopped, per number."""
        return {
            number: "degraded" if slot.actor.degraded is not None and slot.state != "stopped" else slot.state
            for number, slot in self._slots.items()
        }

    def degraded(self) -> dict[str, str]:
        """The reason of every degraded number."""
        return {n: s.actor.degraded for n, s in self._slots.items() if s.actor.degraded is not None}

    def mark_degraded(self, number: str, reason: str) -> None:
        """Flag ``number`` degraded from outside (e.g. its channel's token was revoked)."""
        self._slots[number].actor.mark_degraded(reason)

    def clear_degraded(self, number: str) -> None:
        slot = self._slots[number]
        slot.crash_looping = False
        slot.actor.clear_degraded()

    def restarts(self, number: str) -> int:
        return self._slots[number].restarts

    def actors(self) -> list[NumberActor]:
        return [slot.actor for slot in self._slots.values()]

    def last_error(self, number: str) -> str | None:
        slot = self._slots.get(number)
        return None if slot is None else slot.last_error

    async def add(self, actor: NumberActor) -> None:
        """Start supervising a new number's actor (live reload); returns once it recovered its outbox."""
        if self._nursery is None or self._stopping:
            raise RuntimeError("the supervisor is not running")
        if actor.number in self._slots:
            raise ValueError(f"{actor.number} is already supervised")
        slot = self._slots[actor.number] = _Slot(actor)
        await self._nursery.start(self._supervise, slot)

    async def retire(self, number: str, *, timeout: float = 10.0) -> None:
        """Stop a number's actor for good; its outbox stays in LMDB.

        Its sends in flight get ``timeout`` seconds to finish; then the actor is
        cancelled (an interrupted send is retried by whoever sends for the number next).
        """
        slot = self._slots.get(number)
        if slot is None:
            raise KeyError(number)
        slot.retiring = True
        slot.actor.stop()
        slot.wake.set()
        with trio.move_on_after(timeout):
            await slot.stopped.wait()
        if not slot.stopped.is_set():
            log.warning("actor.retire_cancelled", number=number, timeout=timeout)
            slot.scope.cancel()
            await slot.stopped.wait()
        if self._slots.get(number) is slot:
            del self._slots[number]

    async def replace(self, actor: NumberActor, *, timeout: float = 10.0) -> None:
        """Swap a number's actor for a new one (changed endpoint or credentials).

        The old one finishes its sends in flight and stops before the new one
        recovers the outbox, so no message is ever sent by both.
        """
        await self.retire(actor.number, timeout=timeout)
        await self.add(actor)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor (each recovers its outbox first), then supervise until they stop."""
        async with trio.open_nursery() as nursery:
            for slot in list(self._slots.values()):
                await nursery.start(self._supervise, slot)
            self._nursery = nursery
            # Keeps the nursery open while a live reload retires every actor and adds new ones.
            nursery.start_soon(self._stop_event.wait)
            task_status.started()
        self._nursery = None

    def stop_requested(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask every actor to finish its sends in flight and return."""
        self._stopping = True
        self._stop_event.set()
        for slot in self._slots.values():
            slot.actor.stop()

    async def _supervise(
        self, slot: _Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with slot.scope:
                await self._supervise_until_stopped(slot, task_status)
        finally:
            slot.state = "stopped"
            slot.stopped.set()

    async def _supervise_until_stopped(self, slot: _Slot, task_status: trio.TaskStatus[None]) -> None:
        delay = self._base
        first = True
        while not (self.stop_requested() or slot.retiring):
            started_at = trio.current_time()
            try:
                if first:
                    first = False
                    await self._run_once(slot, task_status)
                else:
                    await self._run_once(slot, trio.TASK_STATUS_IGNORED)
            except Exception as exc:
                slot.restarts += 1
                slot.last_error = repr(_innermost(exc))
                slot.state = "restarting"
                log.error("actor.crashed", number=slot.actor.number, restarts=slot.restarts, exc_info=exc)
                self._note_crash(slot)
            else:
                if self.stop_requested() or slot.retiring:
                    break
                slot.state = "restarting"
                log.warning("actor.returned", number=slot.actor.number)
            if trio.current_time() - started_at >= self._reset_after:
                delay = self._base
            # Crash loop: retry slowly (jittered, so many looping actors do not restart in step).
            wait = (
                self._degraded_delay * random.uniform(0.8, 1.0)
                if slot.crash_looping
                else random.uniform(0.0, delay)
            )
            # retire() sets wake: a retiring actor is not restarted after its backoff.
            with trio.move_on_after(wait):
                await slot.wake.wait()
            delay = min(self._cap, delay * 2)

    def _note_crash(self, slot: _Slot) -> None:
        now = trio.current_time()
        slot.crashes.append(now)
        while slot.crashes and slot.crashes[0] < now - self._crash_window:
            slot.crashes.popleft()
        if len(slot.crashes) >= self._crash_limit and not slot.crash_looping:
            slot.crash_looping = True
            slot.actor.mark_degraded(
                f"crash loop: {len(slot.crashes)} crashes in {self._crash_window:g}s, last {slot.last_error}"
            )

    async def _run_once(self, slot: _Slot, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:

            async def run_actor(*, task_status: trio.TaskStatus[None]) -> None:
                try:
                    await slot.actor.run(task_status=task_status)
                finally:
                    nursery.cancel_scope.cancel()  # the stability timer has nothing left to watch

            await nursery.start(run_actor)
            slot.state = "running"
            task_status.started()
            if slot.crash_looping:
                nursery.start_soon(self._clear_when_stable, slot)

    async def _clear_when_stable(self, slot: _Slot) -> None:
        """A crash-looping actor that stays up for ``reset_after`` is healthy again."""
        await trio.sleep(self._reset_after)
        if slot.crash_looping:
            self.clear_degraded(slot.actor.number)
