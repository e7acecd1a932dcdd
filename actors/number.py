"""NumberActor: the one task family that sends for one WhatsApp number.

It owns the number's outbox view, token bucket, credentials and transport;
nothing else touches them. The LMDB outbox is the source of truth: the actor
rebuilds its in-memory queues from it on every (re)start, and ``notify`` is only
a fast path for messages committed while it runs.

This module keeps the actor's lifecycle (start, serve, idle exit, stop), its
chores (token refresh, endpoint probes on the host's timers), control (pause,
resume, degraded) and the send loop. The rest is one part per concern:
``queues`` (which recipient may go next: per-recipient FIFOs, the ready line,
parked recipients), ``policy`` (give up or back off after a failed attempt),
``recording`` (commit outcomes; hold them while storage fails) and
``statistics`` (the counters and the snapshot).

Sending: recipients proceed concurrently up to ``max_in_flight``, each with at
most one send in flight, so its messages go out in acceptance order. Cloud
numbers add two of Meta's limits before the bucket (``pair``: the per-recipient
rate; ``budget``: the messaging tier); a recipient that must wait is parked
until its time, without a send slot, so it never blocks the ones behind it.

Outcomes: a send's answer is held (``unrecorded``, which outlives the actor)
from before its write until the commit; while storage refuses writes no new
send starts. Only the process dying between an answer and its commit leaves a
message to be sent again (at-least-once), as does a crash of the actor while a
send awaits its answer (that send is ambiguous). A number under ``on_ambiguous =
"fail"`` (at-most-once) marks each send durably before it goes out (``inflight``):
a send cut off so is then failed as ambiguous by whoever recovers the outbox.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, Protocol, final

import structlog
import trio

from actors.backlog import Backlog
from actors.channel import Channel, Credentials, Unsendable, Upkeep
from actors.credentials.bearer import RefusableCredentials
from actors.credentials.tokeninfo import TokenInfo
from actors.expiry import ValiditySweep
from actors.holds import SendHolds
from actors.inflight import InFlight, unsent
from actors.lease import ALWAYS_OPEN, SendLease
from actors.multiconnect import MultiEndpoint
from actors.outcome import Failed, Halt, Reauth, Retry, Sent, classify_error
from actors.pacing.pairrate import PairLimiter
from actors.pacing.ratelimit import TokenBucket
from actors.pacing.tier import TierBudget
from actors.policy import DEFAULT_POLICY, EXPIRED, DeliveryPolicy, GiveUp, sendable
from actors.queues import DEFAULT_WINDOW, Pending, SendQueues
from actors.recording import OutcomeRecorder, storage_delay
from actors.statistics import ActorStatistics, SendCounts
from actors.template_gate import TemplateGate
from actors.timers import Timer, Timers
from actors.transport import (
    BodyStream,
    ConnectError,
    Response,
    StreamingTransport,
    Transport,
    TransportError,
)
from actors.unrecorded import Unrecorded
from dispatcher.core import ledger, outbox
from dispatcher.core.clock import WallClock
from dispatcher.core.models import MessageRecord
from dispatcher.core.store import Store, seq_key

log = structlog.get_logger()

HALT_RETRY: Final = 60.0  # seconds between tries while credentials are refused (when they cannot say)
IDLE_LINGER: Final = 30.0  # seconds an actor's task waits with nothing to do before it ends


class ActorHost(Protocol):
    """Where a number actor's work runs: the ``Supervisor`` (restarts, shared by every number)
    or ``NumberActor.run`` (standalone). It owns the timers and the tasks; the actor owns none."""

    @property
    def timers(self) -> Timers: ...

    def wake(self, actor: NumberActor) -> None:
        """``actor`` has work and no task serving it: call ``actor.serve()`` in a task soon.
        Never called for an actor that is stopping, except to let a standalone ``run`` return."""
        ...


@final
class NumberActor:
    """One number's sender. Idle, it has no task: ``start`` recovers its outbox and schedules
    its chores (token refresh, endpoint probes) on the host's shared timers; when a message
    arrives or a chore comes due it asks its host to run ``serve``, which sends until the
    outbox is empty and then lingers ``idle_linger`` seconds before returning."""

    __slots__ = (
        "_backlog",
        "_bucket",
        "_budget",
        "_channel",
        "_chores",
        "_expiry",
        "_halted",
        "_host",
        "_idle_since",
        "_inflight",
        "_lease",
        "_linger",
        "_live",
        "_max_in_flight",
        "_on_status",
        "_pair",
        "_paused",
        "_policy",
        "_queues",
        "_recorder",
        "_resumed",
        "_stopped",
        "_stopping",
        "_store",
        "_templates",
        "_token_info",
        "_tokens",
        "_transport",
        "_upkeep_due",
        "_upkeep_timer",
        "_upkeeping",
        "_wakeup",
        "_wall",
        "_window",
        "counts",
        "degraded",
        "degraded_code",
        "holds",
        "number",
        "unrecorded",
    )

    def __init__(
        self,
        *,
        number: str,
        store: Store,
        transport: Transport,
        channel: Channel,
        tokens: Credentials,
        bucket: TokenBucket,
        wall: WallClock,
        max_in_flight: int = 32,
        policy: DeliveryPolicy = DEFAULT_POLICY,
        on_status: Callable[[MessageRecord], None] | None = None,
        pair: PairLimiter | None = None,
        budget: TierBudget | None = None,
        idle_linger: float = IDLE_LINGER,
        unrecorded: Unrecorded | None = None,
        lease: SendLease = ALWAYS_OPEN,
        templates: TemplateGate | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        """``policy``: what to do when a send did not succeed (retries, backoff, ambiguous sends).
        ``idle_linger``: seconds ``serve`` waits with nothing to do before returning.
        ``window``: pending messages held in memory at most; the rest wait in the outbox.
        ``unrecorded``: the number's outcomes not yet committed, kept by whoever outlives this
        actor (a predecessor's are committed, never sent again); a new one if None.
        ``lease``: until when a send may start (``actors.lease``): asked before every send.
        ``templates``: whether a template message may go now (``actors.template_gate``)."""
        self.number = number
        self._store = store
        self._transport = transport
        self._channel = channel
        self._tokens = tokens
        # Checked once: isinstance against a runtime-checkable protocol costs ~20 us a call.
        self._token_info = tokens if isinstance(tokens, TokenInfo) else None
        self._bucket = bucket
        self._wall = wall
        self._max_in_flight = max_in_flight
        self._policy = policy
        self._on_status = on_status
        self._pair = pair
        self._budget = budget
        self._lease = lease
        self._templates = templates
        self._linger = idle_linger
        self._window = window
        self._halted: str | None = None  # the credentials were refused (Halt): why
        self._host: ActorHost | None = None
        self._live = False  # the queues mirror the outbox (recovered, no crash since)
        self._stopping = False
        self._paused = False
        self._resumed: trio.Event | None = None  # while paused
        # Outlives restarts: a cancel may be committing while the actor restarts.
        self.holds = SendHolds()
        # Outlives restarts and, when given, this actor: answers received but not yet committed.
        self.unrecorded = Unrecorded() if unrecorded is None else unrecorded
        self._recorder = OutcomeRecorder(
            number=number, store=store, unrecorded=self.unrecorded, on_recovered=self._signal
        )
        self._expiry = ValiditySweep(
            number=number, store=store, wall=wall, holds=self.holds, on_expired=self._expired
        )
        # While a serve() runs (None otherwise): its wake-up, stop signal and chores nursery.
        self._wakeup: trio.Event | None = None
        self._stopped: trio.Event | None = None
        self._chores: trio.Nursery | None = None
        self._upkeep_timer: Timer | None = None
        self._upkeep_due = False  # a chore came due while no serve() could start it
        self._upkeeping = False
        # Trio time the last pending message left the queues: the linger counts from it, so a
        # serve() woken only for a chore (a token refresh, a probe) ends as soon as it is done.
        self._idle_since = -math.inf
        self._reset()
        self.degraded: str | None = None
        self.degraded_code: str | None = None
        self.counts = SendCounts()  # read by statistics() at scrape time
        self._inflight = InFlight(
            number=number,
            store=store,
            policy=policy,
            recorder=self._recorder,
            unrecorded=self.unrecorded,
            wall=wall,
            counts=self.counts,
        )

    def _reset(self) -> None:
        self._queues = SendQueues(self._window)
        self._backlog = Backlog(self._store, self.number)

    # -- intake -------------------------------------------------------------------

    def notify(self, seq: int, record: MessageRecord, part: int = 0) -> None:
        """A message (or part ``part`` of it) was committed to this number's outbox. Never blocks,
        never reads: the window takes it if it has room and nothing earlier waits on disk."""
        self.counts.accepted += 1
        if not self._live:
            return
        queues = self._queues
        if self._backlog.notified(queues, seq, record, part) or self._backlog.wanted(queues):
            self._signal()
        if record.valid_until is not None and not part and self._expiry.noted(record.valid_until):
            self._schedule_upkeep()

    def _signal(self) -> None:
        """There is something to do: wake the serving task, or ask the host for one."""
        if self._wakeup is not None:
            self._wakeup.set()
        elif self._host is not None and self._live and not self._stopping:
            self._host.wake(self)

    def _recover(self) -> int:
        """Load the window from the durable outbox (inline: runs before we serve); how many."""
        return self._backlog.recover(self._queues)

    def _expired(self, records: list[MessageRecord]) -> None:
        """The validity sweep failed ``records`` (30036): count them like failed sends."""
        counts = self.counts
        counts.failed += len(records)
        for _ in records:
            counts.count_failure(ledger.EXPIRED[0])

    # -- lifecycle ----------------------------------------------------------------

    def start(self, host: ActorHost) -> int:
        """Recover the outbox and go live, with no task of its own: ``host`` runs ``serve()``
        whenever the actor has work. Returns the number of messages recovered."""
        self._host = host
        self._stopping = False
        recovered = self._go_live()
        if self._queues or self._backlog.more():
            host.wake(self)
        return recovered

    def _go_live(self) -> int:
        """(Re)build the in-memory state from LMDB: at start, and after a crash."""
        self._reset()
        interrupted = self._inflight.recover()  # before the window: its failures are held first
        recovered = self._recover()
        self._expiry.load()
        self._tokens.restore()
        if self._budget is not None:
            self._budget.load(self._wall.now())
        self._live = True
        self._schedule_upkeep()
        log.info("actor.started", number=self.number, recovered=recovered, interrupted=interrupted)
        return recovered

    async def serve(self) -> None:
        """Send what is queued and do due chores until idle for ``idle_linger`` seconds, or until
        ``stop()`` (sends in flight finish first). Raises what crashed the actor; the next
        ``serve()`` then rebuilds its queues from the outbox first."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(number=self.number)
        self._stopped = stopped = trio.Event()
        if self._stopping:
            stopped.set()
        try:
            if not self._live:
                self._go_live()
            while True:
                self._wakeup = trio.Event()
                async with trio.open_nursery() as chores:
                    self._chores = chores
                    if self._upkeep_due:
                        self._start_upkeep()
                    async with trio.open_nursery() as sends:
                        await self._dispatch(sends)
                    self._recorder.close()
                    self._chores = None
                    if self._stopping:
                        chores.cancel_scope.cancel()  # a login under way is not needed any more
                # No checkpoint from here to the return: a notify() either landed in the
                # queues (seen here) or finds _wakeup None and asks the host for a new serve().
                if self._stopping or not (self._queues or self._upkeep_due or self._backlog.more()):
                    if not self._queues:  # idle: let the scheduling buffers go
                        self._queues.release()
                    return
        except BaseException:
            self._live = False  # the queues may be half-updated: rebuild them from LMDB
            raise
        finally:
            self._wakeup = self._stopped = self._chores = None
            self._recorder.close()
            if self._stopping:
                log.info("actor.stopped", loaded=self._queues.loaded())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run standalone (tests, tools) with timers of its own: recover, ``started()``, then
        serve whenever there is work, until ``stop()``. A crash propagates: restarting is
        the Supervisor's job."""
        host = _SoloHost()
        async with trio.open_nursery() as nursery:
            await nursery.start(host.timers.run)
            self.start(host)
            task_status.started()
            while not self._stopping:
                await host.woken()
                if not self._stopping:
                    await self.serve()
            nursery.cancel_scope.cancel()

    # -- chores (token refresh, endpoint probes) ------------------------------------

    def _upkeeps(self) -> tuple[Upkeep, ...]:
        if isinstance(self._transport, MultiEndpoint):  # health probes
            return (self._tokens, self._expiry, self._transport)
        return (self._tokens, self._expiry)

    def _schedule_upkeep(self) -> None:
        """Put the earliest chore on the host's timers (replacing the previous timer)."""
        if self._host is None or self._stopping or self._upkeeping:
            return  # a running upkeep reschedules when it is done
        due = min(part.due_at() for part in self._upkeeps())
        timer = self._upkeep_timer
        if timer is not None and timer.active:
            if timer.deadline == due:
                return
            timer.cancel()
        timers = self._host.timers
        self._upkeep_timer = None if due == math.inf else timers.call_at(due, self._upkeep_came_due)

    def _upkeep_came_due(self) -> None:
        """Timer callback: start the chores now if serving, else ask the host to serve."""
        self._upkeep_timer = None
        if self._upkeeping or self._stopping:
            return
        if self._chores is not None:
            self._start_upkeep()
        else:
            self._upkeep_due = True
            if self._wakeup is not None:
                self._wakeup.set()
            elif self._host is not None and self._live:
                self._host.wake(self)

    def _start_upkeep(self) -> None:
        assert self._chores is not None
        self._upkeep_due = False
        self._upkeeping = True
        self._chores.start_soon(self._upkeep)

    async def _upkeep(self) -> None:
        # Started from the timers' task: its context, not the serving task's.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(number=self.number)
        try:
            for part in self._upkeeps():
                if part.due_at() <= trio.current_time():
                    await part.upkeep()
        finally:
            self._upkeeping = False
            self._schedule_upkeep()
            if self._wakeup is not None:
                self._wakeup.set()  # the dispatcher may be waiting for this to go idle

    # -- the number's API for others: inbound media downloads with its token ------------

    async def api_get(self, target: bytes) -> Response:
        """GET on the number's API with its token (one re-login on 401): inbound media downloads.

        Raises:
            TransportError: no answer.
        """
        return await self.api_call(b"GET", target)

    async def api_call(self, method: bytes, target: bytes, body: bytes = b"") -> Response:
        """A request to the number's API with its token (one re-login on 401), apart from the
        send loop: media downloads, an operator's provisioning (a JSON ``body``).

        Raises:
            TransportError: no answer.
        """
        await self._tokens.wait_ready()
        for _ in range(2):
            token = self._tokens.token
            headers = [(b"authorization", self._tokens.auth_header())]
            if body:
                headers.append((b"content-type", b"application/json"))
            resp = await self._transport.request(method, target, headers, body)
            if resp.status != 401:
                break
            await self._tokens.refresh(token)
        return resp

    async def open_media(self, media_id: str, *, limit: int, deadline: float) -> BodyStream:
        """Inbound media ``media_id`` from the number's API, its body streamed (``open_download``):
        On-Prem answers with the file; Cloud with its metadata, whose URL is then fetched with
        the same token, only from the endpoint's own origin or Meta's media hosts.

        Raises:
            IdError: ``media_id`` is not a media id (it is never put into a path).
            ValueError: Cloud's metadata has no usable URL.
            TransportError: no answer (``ResponseTooLargeError``: one too large).
        """
        channel = self._channel
        target = channel.media_target(media_id)
        if not channel.media_hosts:
            return await self.open_download(target, limit=limit, deadline=deadline)
        answer = await self.api_get(target)  # small JSON, within the transport's own answer limit
        if answer.status != 200:
            return BodyStream.whole(answer, limit)
        url = channel.media_location(answer)
        transport = self._transport
        if not isinstance(transport, StreamingTransport):
            raise ConnectError("this transport cannot fetch a media location")
        headers = [(b"authorization", self._tokens.auth_header())]
        return await transport.stream_url(
            url, headers, limit=limit, deadline=deadline, hosts=channel.media_hosts
        )

    async def open_download(self, target: bytes, *, limit: int, deadline: float) -> BodyStream:
        """GET ``target`` with the number's token (one re-login on 401), its body streamed:
        inbound media. The caller reads the body, then (or on any error) closes the stream.

        ``limit`` bounds the body (``ResponseTooLargeError``), ``deadline`` (trio time) the
        whole download; a transport that cannot stream answers whole, within ``limit``.

        Raises:
            TransportError: no answer (``ResponseTooLargeError``: one too large).
        """
        await self._tokens.wait_ready()
        token = self._tokens.token
        stream = await self._get_streamed(target, limit, deadline)
        if stream.status == 401:
            stream.close()
            await self._tokens.refresh(token)
            stream = await self._get_streamed(target, limit, deadline)
        return stream

    async def _get_streamed(self, target: bytes, limit: int, deadline: float) -> BodyStream:
        headers = [(b"authorization", self._tokens.auth_header())]
        transport = self._transport
        if isinstance(transport, StreamingTransport):
            return await transport.stream(b"GET", target, headers, limit=limit, deadline=deadline)
        return BodyStream.whole(await transport.request(b"GET", target, headers, b""), limit)

    # -- control ------------------------------------------------------------------

    def stop(self) -> None:
        """Start no new sends; ``serve`` (and ``run``) return once the sends in flight finish."""
        self._stopping = True
        self._live = False  # notify() stops queueing: the outbox goes to the number's next actor
        if self._upkeep_timer is not None:
            self._upkeep_timer.cancel()
            self._upkeep_timer = None
        if self._stopped is not None:
            self._stopped.set()
        if self._wakeup is not None:
            self._wakeup.set()
        elif self._host is not None:
            self._host.wake(self)  # lets a standalone run() return

    def stop_requested(self) -> bool:
        return self._stopping

    @property
    def serving(self) -> bool:
        """A task is serving the actor now (False while idle)."""
        return self._wakeup is not None

    @property
    def credentials(self) -> Credentials:
        return self._tokens

    @property
    def bucket(self) -> TokenBucket:
        return self._bucket

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Start no new sends (intake goes on into the outbox); sends in flight finish."""
        if not self._paused:
            self._paused = True
            self._resumed = trio.Event()
            log.info("actor.paused", number=self.number)

    def retune(self, rate: float, burst: int, *, headroom: int = 1) -> None:
        """A reload, or Meta (a throughput upgrade), changed the number's rate or burst: the
        bucket takes them from now on (``headroom``: slots of the burst kept back)."""
        self._bucket.configure(rate, burst, headroom=headroom)

    def set_tier_limit(self, limit: int | None) -> None:
        """Meta changed the number's messaging tier (None: unlimited): the budget takes it from
        now on, and recipients waiting for the old one are admitted again at once."""
        if self._budget is None:
            return
        if self._budget.set_limit(limit) and self._queues.unpark_all():
            self._signal()

    def templates_sendable(self) -> None:
        """A template that was paused may be sent again: recipients waiting on the template gate
        are looked at now rather than at their recheck (every parked recipient is; one whose hold
        still stands, a pair rate or the budget, is parked again at once)."""
        if self._queues.unpark_all():
            self._signal()

    def hold(self, sid: str) -> bool:
        """Keep the actor off ``sid`` while it is edited (cancel): False once its send has started."""
        return self.holds.try_hold(sid)

    def release(self, sid: str) -> None:
        self.holds.release(sid)

    async def refresh_credentials(self) -> None:
        """Log in again now, single-flight with the actor's own refresh."""
        await self._tokens.refresh(self._tokens.token)

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._resumed is not None:
                self._resumed.set()
                self._resumed = None
            log.info("actor.resumed", number=self.number)
            if self._queues or self._backlog.more():
                self._signal()

    def mark_degraded(self, reason: str, code: str) -> None:
        """Flag the number as degraded (health, /metrics): e.g. a crash loop, or a channel whose
        token was revoked (Cloud API error 190). The actor keeps running; clear it once fixed.
        ``code`` says why in a word that is safe to show anyone (``crash_loop``, ``credentials``);
        ``reason`` has the details, for the admin."""
        if self.degraded != reason:
            log.error("actor.degraded", number=self.number, reason=reason, code=code)
        self.degraded = reason
        self.degraded_code = code

    def clear_degraded(self) -> None:
        if self.degraded is not None:
            log.info("actor.recovered", number=self.number, was=self.degraded)
        self.degraded = self.degraded_code = None

    @property
    def storage_failing(self) -> bool:
        """Storage cannot record this number's outcomes now: no new send starts."""
        return self._recorder.recovery is not None

    def pending(self) -> int:
        """Messages it holds in memory now (its window: queued, in flight, parked), without a
        read; ``statistics().pending`` is the durable outbox's depth."""
        return self._queues.loaded()

    @property
    def storage_error(self) -> str | None:
        """Why storage refused this number's last write, while it fails."""
        return self._recorder.error

    def note_status(self, status: str, error_code: int | None) -> None:
        """A webhook moved one of this number's messages to ``status`` (for /metrics)."""
        self.counts.note_status(status, error_code)

    # -- the send loop ------------------------------------------------------------

    async def _dispatch(self, sends: trio.Nursery) -> None:
        """Start sends in order until ``stop()``, or until nothing was left to do for ``idle_linger``."""
        slots = trio.Semaphore(self._max_in_flight)
        self._recorder.open(sends)
        await self._inflight.clear_leftover()
        backlog = self._backlog
        while not self._stopping:  # the attribute, not stop_requested(): one call less a send
            queues = self._queues
            if backlog.wanted(queues):
                backlog.top_up(queues)
            if not queues.unpark_due(trio.current_time()):
                if backlog.wanted(queues):  # a scan stopped at its limit: go on after a checkpoint
                    await trio.lowlevel.checkpoint()
                    continue
                if queues:  # messages in flight or parked
                    deadline = queues.next_unpark()
                elif self._upkeeping:
                    deadline = math.inf  # a chore under way: it wakes us when done
                else:
                    deadline = self._idle_since + self._linger
                    if trio.current_time() >= deadline:
                        return
                assert self._wakeup is not None
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                continue
            if self._paused:
                assert self._resumed is not None
                await self._wait_for(self._resumed)
                continue
            if (recovery := self._recorder.recovery) is not None:  # outcomes not recorded: send nothing new
                await self._wait_for(recovery)
                continue
            recipient = queues.pop_ready()
            new_count = False
            if self._pair is not None or self._budget is not None:
                hold, new_count = self._admit(recipient)
                if hold > 0:
                    queues.park(recipient, trio.current_time() + hold)
                    continue
            await slots.acquire()
            # No send without a token, or with one known to be refused; stop() ends the wait.
            if (self._halted is not None or not self._tokens.ready) and not await self._token_or_stop():
                slots.release()
                return
            # Pace in this single dispatching task, so sends leave in FIFO order.
            await self._bucket.acquire()
            if self.stop_requested():  # stop() was called while we waited (a call: mypy narrows _stopping)
                slots.release()
                return
            sends.start_soon(self._deliver_head, queues.begin(recipient), slots, new_count)

    async def _token_or_stop(self) -> bool:
        """Wait for usable credentials: True once they are, False if ``stop()`` came first."""
        stopped = self._stopped
        assert stopped is not None
        async with trio.open_nursery() as nursery:

            async def on_stop() -> None:
                await stopped.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_stop)
            await self._tokens.wait_ready()
            nursery.cancel_scope.cancel()
        return not self._stopping

    async def _lease_or_stop(self) -> bool:
        """Wait until the send lease is renewed: True once it is, False if ``stop()`` came first."""
        stopped = self._stopped
        assert stopped is not None
        self.counts.lease_waits += 1
        log.warning("send.lease_wait", number=self.number)
        async with trio.open_nursery() as nursery:

            async def on_stop() -> None:
                await stopped.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_stop)
            await self._lease.wait_open()
            nursery.cancel_scope.cancel()
        return not self._stopping

    def _admit(self, recipient: str) -> tuple[float, bool]:
        """``(seconds to wait, counts against the tier)`` for the head message to ``recipient``."""
        now = trio.current_time()
        if self._pair is not None:
            hold = self._pair.ready_at(recipient, now) - now
            if hold > 0:
                return hold, False
        new_count = False
        if self._budget is not None:
            admission = self._budget.admit(recipient, self._wall.now())
            if admission.wait > 0:
                log.info("tier.wait", recipient=recipient, wait=round(admission.wait, 1))
                return admission.wait, False
            new_count = admission.new
        if self._pair is not None:
            self._pair.take(recipient, now)
        return 0.0, new_count

    async def _wait_for(self, resumed: trio.Event) -> None:
        """Sleep until ``resumed`` (paused, or storage failing); ``stop()`` also wakes us (it
        sets the wakeup event)."""
        wakeup = self._wakeup
        assert wakeup is not None
        async with trio.open_nursery() as waiters:

            async def wait_for(event: trio.Event) -> None:
                await event.wait()
                waiters.cancel_scope.cancel()

            waiters.start_soon(wait_for, resumed)
            waiters.start_soon(wait_for, wakeup)
        if wakeup.is_set() and self.stop_requested():
            return
        if wakeup.is_set():
            self._wakeup = trio.Event()

    async def _deliver_head(self, item: Pending, slots: trio.Semaphore, new_count: bool = False) -> None:
        """Deliver ``item``, its recipient's head message (``SendQueues.begin``), then put the
        recipient back: on the ready line if it has more, parked if this one goes again later."""
        recipient = item.to_number
        again: float | None = None
        try:
            if new_count and self._budget is not None and not await self._count_recipient(recipient):
                again = storage_delay(1)  # not sent: the same message once storage is back
            else:
                again = await self._deliver(item, slots)
        finally:
            queues = self._queues
            if again is not None:
                queues.retry_at(recipient, trio.current_time() + again)  # the same message, later
                self._signal()
            elif queues.done(recipient) or queues.starved():  # back on the ready line, or to refill
                self._signal()
            elif not queues:
                self._idle_since = trio.current_time()
                self._signal()  # nothing left: the dispatcher starts its idle linger
            if item.holds_slot:
                slots.release()

    async def _deliver(self, item: Pending, slots: trio.Semaphore) -> float | None:
        """Send one message until it is sent or has failed for good; the bucket slot is held.

        Returns None when done with the message, or the seconds after which to try it
        again (Meta's pair rate back-off), the recipient parked meanwhile.
        """
        # A cancel may be committing: wait for it. A canceled message has left the outbox.
        await self.holds.begin_send(item.sid)
        try:
            if self._store.get(b"outbox", seq_key(self.number, item.seq)) is None:
                return None
            if (held := self.unrecorded.get(item.seq)) is not None:
                # Its answer came before a restart: the send is done, only its record is not.
                await self.unrecorded.wait_recorded(held)
                return None
            return await self._deliver_entry(item, slots)
        finally:
            self.holds.end_send(item.sid)

    async def _deliver_entry(self, item: Pending, slots: trio.Semaphore) -> float | None:
        record = item.record or self._load(item)
        inflight = self._inflight
        if record is None or not sendable(record, item.part):
            drop = ledger.drop_entry(self.number, item.seq, started=inflight.marking)
            await self._recorder.record(item.seq, item.sid, drop)
            return None
        structlog.contextvars.bind_contextvars(sid=item.sid)
        counts = self.counts
        channel = self._channel
        try:
            method, target, body, head = channel.encode(record, item.part)
        except Unsendable as exc:
            await self._fail(item, exc.code, exc.message)
            return None
        while True:
            if record.valid_until is not None and self._wall.now() >= record.valid_until:
                await self._fail(item, *EXPIRED)  # never sent late
                return None
            if record.template is not None and self._templates is not None:
                held = self._templates.verdict(record.template.content_sid)
                if isinstance(held, Failed):
                    await self._fail(item, held.error_code, held.error_message)
                    return None
                if held is not None:  # its template is paused: this recipient waits, in order
                    log.info("send.template_held", content_sid=record.template.content_sid, delay=held)
                    return held
            token = self._tokens.token
            if trio.current_time() >= self._lease.send_until() and not await self._lease_or_stop():
                return None  # stopping (the bucket went elsewhere): the message stays in the outbox
            if inflight.marking:  # at-most-once: durably marked before it may reach the API
                if not await inflight.mark(item.seq):
                    return storage_delay(1)  # not sent: the same message once storage is back
                if trio.current_time() >= self._lease.send_until():  # the commit ate the lease's time
                    await inflight.unmark(item.seq)
                    continue
            began = trio.current_time()
            try:
                resp = await self._transport.request(
                    method,
                    target,
                    channel.authorize(head, method, target, body, self._tokens.auth_header()),
                    body,
                )
                counts.send_latency.observe(trio.current_time() - began)
                outcome = channel.classify(resp)
            except TransportError as exc:
                outcome = classify_error(exc)
            item.attempts += 1
            if inflight.marking and unsent(outcome):
                await inflight.unmark(item.seq)
            match outcome:
                case Sent(channel_id=channel_id):
                    # The API answered: free the send slot for other recipients while the
                    # commit lands. This recipient stays busy, so its next message still
                    # waits for this one's durable 'sent'.
                    if item.holds_slot:
                        slots.release()
                        item.holds_slot = False
                    # OutcomeRecorder.record, inline: one coroutine frame less on the hottest path.
                    write = ledger.mark_sent(
                        self.number,
                        item.seq,
                        item.sid,
                        channel_id,
                        self._wall.now(),
                        started=inflight.marking,
                    )
                    self.unrecorded.begin(item.seq, write)
                    try:
                        await self._store.write(write)
                    except BaseException as exc:
                        await self._recorder.first_write_failed(item.seq, item.sid, exc)
                    else:
                        self.unrecorded.recorded(item.seq)
                    counts.sent += 1
                    log.info("message.sent", wamid=channel_id, status="sent", attempts=item.attempts)
                    if self._pair is not None:
                        self._pair.succeeded(item.to_number)
                    return None
                case Failed(error_code=code, error_message=message):
                    await self._fail(item, code, message)
                    return None
                case Reauth():
                    log.info("send.unauthorized")
                    await self._tokens.refresh(token)
                case Halt(reason=reason):
                    item.attempts -= 1  # the message is not at fault
                    if not await self._halt(reason, token):
                        return None  # stopping: the message stays in the outbox
                case Retry(pair_limited=True) if self._pair is not None:
                    return await self._pair_refused(item)
                case Retry() as retry:
                    if not await self._retry_or_give_up(item, retry, slots):
                        return None
            await self._bucket.acquire()

    async def _pair_refused(self, item: Pending) -> float | None:
        """Meta's 131056: park this recipient for 4^X s (None: gave up, the message failed)."""
        self.counts.pair_limited += 1
        self.counts.rate_limited += 1
        if (give_up := self._policy.after_pair_refusal(item.attempts)) is not None:
            await self._fail(item, give_up.code, give_up.message)
            return None
        assert self._pair is not None
        wait = self._pair.penalize(item.to_number, trio.current_time())
        log.warning("send.pair_limited", attempt=item.attempts, delay=wait)
        return wait

    async def _halt(self, reason: str, token: str | None) -> bool:
        """Degrade until the credentials change; False if the actor stopped meanwhile."""
        self._halted = reason
        self.mark_degraded(reason, "credentials")
        recovered = False
        async with trio.open_nursery() as nursery:

            async def on_stop() -> None:
                assert self._stopped is not None
                await self._stopped.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_stop)
            if isinstance(self._tokens, RefusableCredentials):
                self._tokens.refused(token)
                self._schedule_upkeep()  # re-read the refused token's source from now on
                await self._tokens.wait_ready()  # until the token is replaced
            else:
                await trio.sleep(HALT_RETRY)  # credentials that cannot tell: try again slowly
            recovered = True
            nursery.cancel_scope.cancel()
        if recovered and self._halted is not None:
            if self.degraded == self._halted:
                self.clear_degraded()
            self._halted = None
        return recovered

    async def _retry_or_give_up(self, item: Pending, retry: Retry, slots: trio.Semaphore) -> bool:
        """Count the failed attempt, then back off (True), or record the failure or stop (False).

        A stop() during the backoff ends it at once: the message stays in the outbox.
        """
        counts = self.counts
        if retry.rate_limited:
            counts.rate_limited += 1
        if retry.after is not None:
            self._bucket.delay_next(retry.after)  # the server said when: honour it exactly
        elif retry.rate_limited and self._bucket.throttled():
            log.warning("send.slowed_down", rate=round(self._bucket.current_rate(), 3))
        if retry.ambiguous:
            counts.ambiguous += 1
            log.warning(
                "send.ambiguous",
                number=self.number,
                sid=item.sid,
                reason=retry.reason,
                policy=self._policy.on_ambiguous,
                attempt=item.attempts,
            )
        decision = self._policy.after_retry(retry, item.attempts)
        if isinstance(decision, GiveUp):
            await self._fail(item, decision.code, decision.message)
            return False
        counts.retries += 1
        delay = decision.delay
        log.warning("send.retry", reason=retry.reason, attempt=item.attempts, delay=round(delay, 3))
        # Back off without holding an in-flight slot: the number keeps sending to other
        # recipients, while this recipient's queue waits (its order is kept).
        slots.release()
        item.holds_slot = False
        assert self._stopped is not None
        with trio.move_on_after(delay):
            await self._stopped.wait()
        if self._stopping:
            return False
        await slots.acquire()
        item.holds_slot = True
        return True

    async def _fail(self, item: Pending, code: int, message: str) -> None:
        log.warning("send.failed", status="failed", error_code=code, error=message)
        write = ledger.mark_failed(
            self.number, item.seq, item.sid, code, message, self._wall.now(), started=self._inflight.marking
        )
        await self._recorder.record(item.seq, item.sid, write)
        self.counts.failed += 1
        self.counts.count_failure(code)

    async def _count_recipient(self, recipient: str) -> bool:
        """Persist a new recipient's tier count before its first send; False if storage failed."""
        assert self._budget is not None
        if await self._recorder.try_write(self._budget.persist(recipient)):
            return True
        self._budget.uncount(recipient)  # counted again, and persisted, when it is sent
        return False

    def _load(self, item: Pending) -> MessageRecord | None:
        raw = self._store.get(b"messages", ledger.sid_key(item.sid))
        return None if raw is None else ledger.load(raw)

    def outbox_depth(self) -> int:
        """Entries in the number's durable outbox (O(1): a count kept with the outbox)."""
        return outbox.depth(self._store, self.number)

    def statistics(self) -> ActorStatistics:
        counts = self.counts
        token_info = self._token_info
        return ActorStatistics(
            number=self.number,
            running=self._live,
            pending=self.outbox_depth(),
            window=self._queues.loaded(),
            in_flight=self._queues.in_flight(),
            sent=counts.sent,
            failed=counts.failed,
            retries=counts.retries,
            ambiguous=counts.ambiguous,
            rate_limited=counts.rate_limited,
            paused=self._paused,
            accepted=counts.accepted,
            delivered=counts.delivered,
            read=counts.read,
            failed_by_code=tuple(sorted(counts.failed_by_code.items())),
            token_refreshes=token_info.refreshes if token_info is not None else 0,
            token_expires_in=token_info.expires_in if token_info is not None else None,
            rate=self._bucket.rate,
            burst=self._bucket.burst,
            send_latency=counts.send_latency.snapshot(),
            send_rate=self._bucket.current_rate(),
            degraded=self.degraded,
            pair_limited=counts.pair_limited,
            parked=self._queues.parked(),
            tier_used=self._budget.used if self._budget is not None else 0,
            tier_limit=self._budget.limit if self._budget is not None else None,
            tier_waits=self._budget.waits if self._budget is not None else 0,
            degraded_code=self.degraded_code,
            storage=self._recorder.error if self._recorder.recovery is not None else None,
            unrecorded=len(self.unrecorded),
            storage_failures=self._recorder.failures,
        )


@final
class _SoloHost:
    """``NumberActor.run``'s host: its own timers, and a flag for its loop."""

    __slots__ = ("_woken", "timers")

    def __init__(self) -> None:
        self.timers = Timers()
        self._woken = trio.Event()

    def wake(self, actor: NumberActor) -> None:
        self._woken.set()

    async def woken(self) -> None:
        await self._woken.wait()
        self._woken = trio.Event()


__all__ = ["ActorHost", "ActorStatistics", "NumberActor"]
