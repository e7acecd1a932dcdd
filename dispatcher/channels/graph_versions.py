"""Graph API versions: which one served us, and how long the configured one lives.

Meta keeps a version working at least two years; it becomes unusable two
years after the *next* version ships, and calls to an expired version are
served by the oldest usable one instead, silently (developers.facebook.com
/docs/graph-api/guides/versioning). Every answer says which version served it
(``facebook-api-version``), so a configured version that answers with another
has expired under us; and the published schedule says when the configured one
will (reference: templates-lifecycle-channels.md 2.6, Meta's changelog).

``check`` turns both into one verdict, reported once at start (log) and on
``/metrics``; ``doctor`` shows it with the fix.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

import attrs

# version -> the date it stops working (None: not announced yet). Meta's changelog, 2026.
END_OF_LIFE: Final[dict[str, datetime.date | None]] = {
    "v19.0": datetime.date(2026, 5, 21),
    "v20.0": datetime.date(2026, 9, 24),
    "v21.0": datetime.date(2027, 1, 21),
    "v22.0": datetime.date(2027, 5, 20),
    "v23.0": datetime.date(2027, 10, 8),
    "v24.0": datetime.date(2028, 2, 18),
    "v25.0": datetime.date(2028, 7, 29),
    "v26.0": None,
}
_VERSION: Final = re.compile(r"^v?([0-9]+)\.([0-9]+)$")


def _order(version: str) -> tuple[int, int] | None:
    match = _VERSION.match(version.strip())
    return None if match is None else (int(match[1]), int(match[2]))


def normalized(version: str) -> str:
    """``23.0`` or ``v23.0`` -> ``v23.0`` (the header has no ``v``)."""
    version = version.strip()
    return version if version.startswith("v") else "v" + version


@attrs.frozen
class VersionCheck:
    """The verdict on the configured Graph version."""

    configured: str
    served: str | None  # from the last answer's header (None: no answer seen yet)
    end_of_life: datetime.date | None
    days_left: int | None  # until end of life (negative: past it)
    upgraded: bool  # Meta served the call with a newer version: the configured one has expired
    near_end: bool  # end of life within the warning window
    known: bool  # the version is in our schedule

    @property
    def ok(self) -> bool:
        return not self.upgraded and not self.near_end and (self.days_left is None or self.days_left >= 0)

    def problem(self) -> str | None:
        """What is wrong, in a sentence with the fix; None when nothing is."""
        if self.upgraded:
            return (
                f"Graph {self.configured} has expired: Meta served it as {self.served}. "
                f"Set graph_version / api_version to {self.served} or newer, after reading Meta's changelog"
            )
        if self.days_left is not None and self.days_left < 0:
            return f"Graph {self.configured} stopped working on {self.end_of_life}: upgrade it"
        if self.near_end:
            return (
                f"Graph {self.configured} stops working on {self.end_of_life} ({self.days_left} days): "
                "upgrade graph_version / api_version before then"
            )
        return None


def check(configured: str, served: str | None, today: datetime.date, *, warn_days: int = 90) -> VersionCheck:
    """Judge ``configured`` against the version that ``served`` a call and Meta's schedule."""
    configured = normalized(configured)
    served = normalized(served) if served else None
    eol = END_OF_LIFE.get(configured)
    days = None if eol is None else (eol - today).days
    want, got = _order(configured), _order(served) if served else None
    upgraded = want is not None and got is not None and got > want
    return VersionCheck(
        configured=configured,
        served=served,
        end_of_life=eol,
        days_left=days,
        upgraded=upgraded,
        near_end=days is not None and 0 <= days <= warn_days,
        known=configured in END_OF_LIFE,
    )


__all__ = ["END_OF_LIFE", "VersionCheck", "check", "normalized"]
