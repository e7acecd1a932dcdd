"""The Graph API versions in use, judged from Meta's answers: reported once, and on /metrics.

Every cold-path Graph call notes the version that served it
(``GraphClient.served_version``, from ``facebook-api-version``); ``note`` judges
it against the configured version and Meta's schedule
(``channels.graph_versions``). A problem (a version Meta now serves with a
newer one, one near or past its end of life) is logged once per configured
version and stays visible in ``verdicts()`` for /metrics and ``doctor``.
"""

from __future__ import annotations

import datetime
from typing import final

import structlog

from dispatcher.channels.graph import GraphClient
from dispatcher.channels.graph_versions import VersionCheck, check
from dispatcher.core.clock import WallClock
from dispatcher.ops.onboarding import FIELDS, NumberFields

log = structlog.get_logger()


@final
class GraphHealth:
    def __init__(self, *, wall: WallClock, warn_days: int = 90) -> None:
        self._wall = wall
        self._warn_days = warn_days
        self._verdicts: dict[str, VersionCheck] = {}
        self._reported: set[tuple[str, str | None]] = set()

    def today(self) -> datetime.date:
        return datetime.datetime.fromtimestamp(self._wall.now(), tz=datetime.UTC).date()

    def note(self, configured: str, served: str | None) -> VersionCheck:
        """Judge ``configured`` as ``served`` (None: no answer carried the header yet)."""
        verdict = check(configured, served, self.today(), warn_days=self._warn_days)
        self._verdicts[verdict.configured] = verdict
        problem = verdict.problem()
        key = (verdict.configured, verdict.served)
        if problem is not None and key not in self._reported:
            self._reported.add(key)
            log.warning(
                "graph.version",
                configured=verdict.configured,
                served=verdict.served,
                end_of_life=str(verdict.end_of_life),
                problem=problem,
            )
        return verdict

    def verdicts(self) -> list[VersionCheck]:
        return [self._verdicts[v] for v in sorted(self._verdicts)]

    async def fields(self, graph: GraphClient, phone_number_id: str) -> NumberFields:
        """A number's fields; the answer's version judged on the way."""
        try:
            return await graph.get(phone_number_id, NumberFields, params={"fields": FIELDS})
        finally:
            self.note(graph.version, graph.served_version)
