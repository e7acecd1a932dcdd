"""TemplateGate: whether a queued template message may be sent now.

Meta pauses a template whose quality dropped (and disables one paused too often);
a send of it then fails with 132015/132016. What the daemon knows of a template's
status (``dispatcher.messages.catalog``) is asked before each send of a template
message, so queued messages of a paused template wait for it (the recipient parked,
its order kept; the message's validity period still ends it) or fail at once with
the reason, as the WABA's ``on_paused`` says, instead of going to Meta to be refused.
"""

from __future__ import annotations

from typing import Protocol

from actors.outcome import Failed


class TemplateGate(Protocol):
    def verdict(self, content_sid: str) -> Failed | float | None:
        """None: send it; seconds: ask again after them (its recipient waits); Failed: record it."""
        ...
