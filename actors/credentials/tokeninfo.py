"""What operations may read from a number's credentials, when the channel has it.

A separate, runtime-checkable protocol, so a channel whose credentials never
expire (or do not count refreshes) need not pretend to.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TokenInfo(Protocol):
    refreshes: int

    @property
    def expires_in(self) -> float | None:
        """Seconds of life left, or None before the first login."""
        ...
