"""Which daemon serves a console request when buckets are shared: a number's pages go to its owner."""

from __future__ import annotations

from pathlib import Path

from dispatcher.core.directory import Directory
from dispatcher.frontdoor.routing import InBucket, route
from tests.helpers.buckets import open_buckets

NUMBERS = [f"+1555000{i:04d}" for i in range(1, 9)]


async def test_a_numbers_page_json_and_actions_go_to_its_buckets_owner(tmp_path: Path) -> None:
    async with open_buckets(tmp_path / "root", 4) as buckets:
        directory = Directory([])
        assert len({buckets.index(n) for n in NUMBERS}) > 1  # they spread over the buckets
        for number in NUMBERS:
            owner = InBucket(buckets.index(number))
            for method, path in (
                ("GET", f"/console/numbers/{number}"),
                ("GET", f"/console/numbers/{number.lstrip('+')}"),  # as the admin API accepts it
                ("GET", f"/console/api/numbers/{number}"),
                ("POST", f"/console/numbers/{number}/pause"),
                ("POST", f"/console/numbers/{number}/token-refresh"),
            ):
                assert route(method, path, buckets, directory) == owner, path
        # The rest of the console: any daemon answers (the fleet of the one that answered).
        for method, path in (
            ("GET", "/console/fleet"),
            ("GET", "/console/api/fleet"),
            ("GET", "/console/messages"),
            ("POST", "/console/login"),
            ("GET", "/console/static/console.js"),
            ("GET", "/console/numbers/"),
        ):
            assert route(method, path, buckets, directory) is None, path
