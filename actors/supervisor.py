"""Runs one NumberActor per number and restarts a crashed one; the others never notice.

An idle actor has no task: the supervisor is its host (``ActorHost``), with one
shared timer task for every actor's chores, and starts a task for an actor only
when it has work (a message, a token refresh due), until it is idle again.

An actor that raises is restarted after a full-jitter exponential backoff
(base doubling to a cap, reset once it has run stably for ``reset_after``).
Its outbox lives in LMDB, so a restart loses nothing: the new run recovers it.
Only ``Exception`` is caught: cancellation and KeyboardInterrupt always propagate.

An actor that crashes ``crash_limit`` times within ``crash_window`` seconds is
in a crash loop: it is marked degraded (``states()`` and /healthz say so, its
statistics carry the reason) and restarted only every ``degraded_delay``
seconds, so it cannot burn CPU or hammer its API; the other actors never
notice. Once a run lasts ``reset_after`` seconds it is healthy again.

Storage that cannot record a number's outcomes is not a crash: the actor holds
them, retries and sends nothing new meanwhile (``states()`` says ``storage``).
A restart never sends again what its run had an answer for: the actor's
``unrecorded`` outcomes outlive the run and are committed by the next one.
"""

from __future__ import annotations

import random
from collections import deque
from typing import final

import attrs
import structlog
import trio

from actors.number import NumberActor
from actors.timers import Timer, Timers

log = structlog.get_logger()


def _innermost(exc: BaseException) -> BaseException:
    """The error inside nested one-member exception groups (what actually went wrong)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@attrs.define(eq=False, slots=True)
class _Slot:
    actor: NumberActor
    state: str = "starting"  # starting | running | restarting | stopped
    restarts: int = 0
    last_error: str | None = None
    retiring: bool = False  # removed or replaced by a live reload: stop for good
    serving: bool = False  # a task of ours serves the actor now (or waits out its restart backoff)
    scope: trio.CancelScope | None = None  # that task's (retire() cancels it)
    stopped: trio.Event | None = None  # made by retire(); set once the slot has stopped
    wake: trio.Event | None = None  # made by a restart backoff; retire() sets it to cut it short
    crashes: deque[float] | None = None  # trio times of the crashes within the window
    crash_looping: bool = False
    delay: float = 0.0  # the next restart backoff's upper bound
    started_at: float = 0.0  # trio time of the last (re)start
    stable: Timer | None = None  # clears a crash loop once the actor stays up for reset_after


def _state(slot: _Slot) -> str:
    """What ``states()`` says of a slot: a degraded or storage-bound actor says so while it runs."""
    if slot.state == "stopped":
        return "stopped"
    if slot.actor.degraded is not None:
        return "degraded"
    if slot.actor.storage_failing:
        return "storage"
    return slot.state


@final
class Supervisor:
    """The host of every number actor: one shared timer task, and a task per actor only while
    it has work (``ActorHost.wake``). An idle actor costs a slot and a timer entry."""

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
        self._slots = {a.number: _Slot(a, delay=base_delay) for a in actors}
        self._crash_limit = crash_limit
        self._crash_window = crash_window
        self._degraded_delay = degraded_delay
        self._base = base_delay
        self._cap = max_delay
        self._reset_after = reset_after
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._stop_event = trio.Event()
        self._timers = Timers()

    @property
    def timers(self) -> Timers:
        return self._timers

    def actor(self, number: str) -> NumberActor | None:
        slot = self._slots.get(number)
        return None if slot is None else slot.actor

    def states(self) -> dict[str, str]:
        """starting | running | restarting | degraded | storage | stopped, per number (idle counts
        as running; ``storage``: its outcomes wait for storage, it starts no new send)."""
        return {number: _state(slot) for number, slot in self._slots.items()}

    def degraded(self) -> dict[str, str]:
        """The details of every unhealthy number (for the admin): why it is degraded, or the
        error of the storage that cannot record its outcomes."""
        details: dict[str, str] = {}
        for number, slot in self._slots.items():
            actor = slot.actor
            if actor.degraded is not None:
                details[number] = actor.degraded
            elif actor.storage_failing:
                details[number] = f"storage: {actor.storage_error}"
        return details

    def reasons(self) -> dict[str, str]:
        """Why each unhealthy number is, as a code safe to show anyone: ``crash_loop``,
        ``credentials``, ``storage`` (details: ``degraded()`` and the actor's statistics)."""
        reasons: dict[str, str] = {}
        for number, slot in self._slots.items():
            if slot.state == "stopped":
                continue
            actor = slot.actor
            if actor.degraded_code is not None:
                reasons[number] = actor.degraded_code
            elif actor.storage_failing:
                reasons[number] = "storage"
        return reasons

    def mark_degraded(self, number: str, reason: str, code: str = "credentials") -> None:
        """Flag ``number`` degraded from outside (e.g. its channel's token was revoked)."""
        self._slots[number].actor.mark_degraded(reason, code)

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
        slot = self._slots[actor.number] = _Slot(actor, delay=self._base)
        self._start(slot)
        await trio.lowlevel.checkpoint()

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
        if slot.serving:
            if slot.wake is not None:
                slot.wake.set()
            if slot.stopped is None:
                slot.stopped = trio.Event()
            with trio.move_on_after(timeout):
                await slot.stopped.wait()
            if slot.serving:
                log.warning("actor.retire_cancelled", number=number, timeout=timeout)
                if slot.scope is not None:
                    slot.scope.cancel()
                await slot.stopped.wait()
        else:
            self._stopped(slot)
            await trio.lowlevel.checkpoint()
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
        """Start every actor (each recovers its outbox first), serve them on demand until
        ``stop()``, then return once every actor has finished its sends in flight."""
        async with trio.open_nursery() as nursery:
            timers = trio.CancelScope()
            nursery.start_soon(self._run_timers, timers)
            self._nursery = nursery
            for slot in list(self._slots.values()):
                self._start(slot)
            task_status.started()
            # Waits here, not in a task: a live reload may retire every actor and add new ones.
            await self._stop_event.wait()
            timers.cancel()
        self._nursery = None
        for slot in self._slots.values():
            self._stopped(slot)

    async def _run_timers(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._timers.run()

    def stop_requested(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask every actor to finish its sends in flight and return."""
        self._stopping = True
        self._stop_event.set()
        for slot in self._slots.values():
            slot.actor.stop()
            if slot.wake is not None:
                slot.wake.set()  # a restart backoff ends now: there is nothing to restart

    # -- ActorHost --------------------------------------------------------------------

    def wake(self, actor: NumberActor) -> None:
        """``actor`` has work: serve it in a task of its own until it is idle again."""
        slot = self._slots.get(actor.number)
        if slot is None or slot.actor is not actor or slot.serving or slot.retiring or self._stopping:
            return
        if actor.stop_requested() or self._nursery is None:
            return
        slot.serving = True
        self._nursery.start_soon(self._serve, slot, False)

    # -- supervision ------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        """Recover the actor's outbox and put it on standby (it gets a task when it has work)."""
        slot.started_at = trio.current_time()
        try:
            slot.actor.start(self)
        except Exception as exc:
            self._crashed(slot, exc)
            slot.serving = True
            assert self._nursery is not None
            self._nursery.start_soon(self._serve, slot, True)
            return
        slot.state = "running"

    async def _serve(self, slot: _Slot, crashed: bool) -> None:
        """Serve the actor until it is idle; restart it after a crash (backoff, crash loops)."""
        actor = slot.actor
        try:
            with trio.CancelScope() as slot.scope:
                while not self._retired(slot):
                    if crashed:
                        await self._backoff(slot)
                        if self._retired(slot):  # stop() or retire() during the backoff
                            break
                        slot.started_at = trio.current_time()
                        if slot.crash_looping:
                            self._watch_stability(slot)
                    slot.state = "running"
                    try:
                        await actor.serve()
                    except Exception as exc:
                        self._crashed(slot, exc)
                        crashed = True
                        continue
                    break  # idle (or stopping): the task ends, the actor stays on standby
        finally:
            slot.serving = False
            slot.scope = None
            if self._stopping or slot.retiring:
                self._stopped(slot)

    def _retired(self, slot: _Slot) -> bool:
        return self._stopping or slot.retiring

    def _crashed(self, slot: _Slot, exc: Exception) -> None:
        slot.restarts += 1
        slot.last_error = repr(_innermost(exc))
        slot.state = "restarting"
        log.error("actor.crashed", number=slot.actor.number, restarts=slot.restarts, exc_info=exc)
        if slot.stable is not None:
            slot.stable.cancel()
            slot.stable = None
        now = trio.current_time()
        if now - slot.started_at >= self._reset_after:
            slot.delay = self._base  # it had been healthy for a while
        crashes = slot.crashes
        if crashes is None:
            crashes = slot.crashes = deque()
        crashes.append(now)
        while crashes and crashes[0] < now - self._crash_window:
            crashes.popleft()
        if len(crashes) >= self._crash_limit and not slot.crash_looping:
            slot.crash_looping = True
            slot.actor.mark_degraded(
                f"crash loop: {len(crashes)} crashes in {self._crash_window:g}s, last {slot.last_error}",
                "crash_loop",
            )

    async def _backoff(self, slot: _Slot) -> None:
        # Crash loop: retry slowly (jittered, so many looping actors do not restart in step).
        wait = (
            self._degraded_delay * random.uniform(0.8, 1.0)
            if slot.crash_looping
            else random.uniform(0.0, slot.delay)
        )
        slot.delay = min(self._cap, slot.delay * 2)
        # retire() sets wake: a retiring actor is not restarted after its backoff.
        slot.wake = trio.Event()
        try:
            with trio.move_on_after(wait):
                await slot.wake.wait()
        finally:
            slot.wake = None

    def _watch_stability(self, slot: _Slot) -> None:
        """A crash-looping actor that stays up for ``reset_after`` is healthy again."""

        def clear() -> None:
            slot.stable = None
            if slot.crash_looping and slot.actor is self.actor(slot.actor.number):
                self.clear_degraded(slot.actor.number)

        if slot.stable is not None:
            slot.stable.cancel()
        slot.stable = self._timers.call_at(trio.current_time() + self._reset_after, clear)

    def _stopped(self, slot: _Slot) -> None:
        slot.state = "stopped"
        if slot.stable is not None:
            slot.stable.cancel()
            slot.stable = None
        if slot.stopped is not None:
            slot.stopped.set()
