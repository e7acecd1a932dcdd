"""The SSRF check of a create's MediaUrl values, before anything is stored.

WhatsApp (or, on-prem, the WhatsApp Business API client inside the
customer's network) fetches a MediaUrl itself, so a link to a loopback,
private, link-local or metadata address would make the gateway's own side
fetch from its network. The same allow-list as the callbacks
(``[callbacks] allow_private``) exempts addresses an operator trusts.

A literal IP is checked as is; a name is resolved (bounded by ``timeout``,
all of a request's hosts together) and refused if any address it has is
refused, or if it does not resolve: Twilio's 21620, invalid media URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import trio

from dispatcher.core.ssrf import RefusedURLError, ResolveError, UrlGuard, check_syntax
from dispatcher.core.twilio import TwilioError

RESOLVE_TIMEOUT: Final = 2.0  # seconds for all the hosts of one request


@final
class MediaGuard:
    def __init__(self, guard: UrlGuard, *, timeout: float = RESOLVE_TIMEOUT) -> None:
        self._guard = guard
        self._timeout = timeout

    async def check(self, urls: Sequence[str]) -> None:
        """Every URL's host may be reached, or TwilioError 21620 naming the first that may not."""
        seen: set[tuple[str, str, int | None]] = set()
        with trio.move_on_after(self._timeout) as scope:
            for url in urls:
                try:
                    parts = check_syntax(url)
                except RefusedURLError as exc:
                    raise TwilioError(400, 21620, f"The media URL {url!r} is invalid: {exc}.") from exc
                host = (parts.scheme, parts.hostname or "", parts.port)
                if host in seen:
                    continue
                seen.add(host)
                try:
                    await self._guard.resolve(url)
                except RefusedURLError as exc:
                    raise TwilioError(400, 21620, f"The media URL {url!r} is not allowed: {exc}.") from exc
                except ResolveError as exc:
                    raise TwilioError(
                        400, 21620, f"The media URL {url!r} is invalid: its host does not resolve."
                    ) from exc
        if scope.cancelled_caught:
            raise TwilioError(
                400,
                21620,
                f"The media URL host could not be resolved within {self._timeout:g} seconds.",
            )
