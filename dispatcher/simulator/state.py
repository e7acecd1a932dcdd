"""What the simulator keeps per number: config, tokens, rate gate, counters, history, media."""

from __future__ import annotations

import uuid
from collections import deque
from typing import NamedTuple, final

import attrs
import msgspec

from dispatcher.simulator.auth import TokenStore
from dispatcher.simulator.config import SimNumber
from dispatcher.simulator.messages import Content
from dispatcher.simulator.ratelimit import RateGate
from dispatcher.simulator.wire import Object


class NumberCounters(msgspec.Struct):
    """Per-number counters; ``by_recipient`` is keyed by WhatsApp id (digits, no ``+``).

    ``webhooks_sent``/``webhooks_failed`` count POSTs (a batch is one);
    ``webhooks_dropped`` counts messages whose statuses were shed because the
    webhook queue was full.
    """

    accepted: int = 0
    rejected_400: int = 0
    rejected_401: int = 0
    rejected_429: int = 0
    logins: int = 0
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    webhooks_dropped: int = 0
    by_recipient: dict[str, int] = msgspec.field(default_factory=dict)

    def snapshot(self) -> NumberCounters:
        return msgspec.structs.replace(self, by_recipient=dict(self.by_recipient))


class Received(NamedTuple):
    """One accepted ``POST /v1/messages``, in arrival order."""

    recipient: str
    type: str
    content: str | Object
    """The text body for ``text``; otherwise the type's object as JSON-like builtins
    (``{"contacts": [...]}`` for ``contacts``, whose payload is a list)."""
    id: str


Entry = tuple[str, str, Content, str]
"""How ``NumberState.received`` stores a ``Received`` (converted only when read)."""


def to_received(entry: Entry) -> Received:
    recipient, kind, content, msg_id = entry
    if isinstance(content, str):
        return Received(recipient, kind, content, msg_id)
    if isinstance(content, list):
        return Received(recipient, kind, {kind: msgspec.to_builtins(content)}, msg_id)
    built: Object = msgspec.to_builtins(content)
    return Received(recipient, kind, built, msg_id)


@attrs.define(slots=True)
class SenderRun:
    """Consecutive accepted sends from one client (by its User-Agent): the per-sender log."""

    agent: str
    first: float  # wall-clock seconds of the first and the last send of the run
    last: float
    count: int = 1


@final
@attrs.define(eq=False)
class NumberState:
    """Mutable state of one number; owned by ``Simulator``, read by the webhook sender."""

    config: SimNumber
    webhook_url: str | None
    password: str
    tokens: TokenStore
    gate: RateGate
    received: deque[Entry]
    counters: NumberCounters = attrs.field(factory=NumberCounters)
    media_limit: int = 1_000
    media: dict[str, tuple[str, bytes]] = attrs.field(factory=dict)
    # Who sent, in arrival order, one entry per run of sends from one client: two gateway
    # processes sending for one number at once show up as runs that alternate closely.
    senders: deque[SenderRun] = attrs.field(factory=lambda: deque(maxlen=10_000))

    @classmethod
    def create(cls, config: SimNumber, *, received_limit: int, media_limit: int) -> NumberState:
        return cls(
            config=config,
            webhook_url=config.webhook_url,
            password=config.password,
            tokens=TokenStore(ttl=config.token_ttl),
            gate=RateGate(config.rate, config.burst),
            received=deque(maxlen=received_limit),
            media_limit=media_limit,
        )

    def store_media(self, data: bytes, mime_type: str) -> str:
        """Keep ``data`` for ``GET /v1/media/{id}`` (oldest evicted first); returns a UUID media id."""
        while len(self.media) >= self.media_limit:
            del self.media[next(iter(self.media))]
        media_id = str(uuid.uuid4())
        self.media[media_id] = (mime_type, data)
        return media_id

    def note_sender(self, agent: str, at: float) -> None:
        """An accepted send from the client ``agent`` at wall time ``at``."""
        runs = self.senders
        if runs and runs[-1].agent == agent:
            runs[-1].last = at
            runs[-1].count += 1
        else:
            runs.append(SenderRun(agent, at, at))

    def count_recipient(self, recipient: str) -> None:
        by = self.counters.by_recipient
        by[recipient] = by.get(recipient, 0) + 1
