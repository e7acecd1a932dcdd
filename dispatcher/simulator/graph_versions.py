"""Which Graph API version serves a call: ``facebook-api-version`` on every Graph answer.

Meta serves a call to an expired version with the oldest version still usable, silently,
and says which in the ``facebook-api-version`` answer header (Meta's versioning guide;
restfb reads the header). The simulator does the same for the versions a test
expires (``POST /_sim/graph/versions``); every other version serves itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, final

from dispatcher.simulator.exchange import SimResponse

HEADER: Final = "facebook-api-version"
_VERSION: Final = re.compile(r"^v([0-9]+)\.([0-9]+)$")
KNOWN: Final = ("v19.0", "v20.0", "v21.0", "v22.0", "v23.0", "v24.0", "v25.0", "v26.0")


def _order(version: str) -> tuple[int, int]:
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not a Graph version: {version!r}")
    return int(match[1]), int(match[2])


@final
class GraphVersions:
    def __init__(self) -> None:
        self._expired: set[str] = set()

    def expire(self, versions: Iterable[str]) -> None:
        """From now on, calls to ``versions`` are served by the next usable version."""
        wanted = set(versions)
        for version in wanted:
            _order(version)
        self._expired = wanted

    def served(self, requested: str) -> str:
        if requested not in self._expired:
            return requested
        newer = sorted(
            (v for v in KNOWN if v not in self._expired and _order(v) > _order(requested)), key=_order
        )
        return newer[0] if newer else KNOWN[-1]

    def stamp(self, requested: str, resp: SimResponse) -> SimResponse:
        """``resp`` with the header naming the version that served it."""
        return SimResponse(resp.status, [*resp.headers, (HEADER, self.served(requested))], resp.body)
