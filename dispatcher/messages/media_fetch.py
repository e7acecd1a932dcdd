"""Fetching a media file the daemon itself must hand to Meta (a template's header example).

Unlike a MediaUrl, which WhatsApp fetches, this file is fetched from the daemon's own network,
so the SSRF guard decides (``[callbacks] allow_private`` exempts trusted addresses) and the
connection goes to the very address the guard checked (pinned, the Host header and TLS name
kept), never to one a second DNS answer gives. The whole fetch has one deadline and a size cap.
"""

from __future__ import annotations

from typing import Final, final

import httpx
import trio

from dispatcher.core.ssrf import RefusedURLError, ResolveError, UrlGuard

MAX_BYTES: Final = 16 << 20  # Meta's largest template header example (a video)
FETCH_TIMEOUT: Final = 30.0


class MediaFetchError(Exception):
    """The file could not be fetched; the message says why (safe to show the caller)."""


@final
class MediaFetcher:
    def __init__(
        self,
        *,
        guard: UrlGuard,
        client: httpx.AsyncClient,
        max_bytes: int = MAX_BYTES,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self._guard = guard
        self._client = client
        self._max = max_bytes
        self._timeout = timeout

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """The file at ``url`` and its content type (without parameters)."""
        try:
            target = await self._guard.resolve(url)
        except (RefusedURLError, ResolveError) as exc:
            raise MediaFetchError(f"{url}: {exc}") from exc
        ip = f"[{target.ip}]" if ":" in target.ip else target.ip
        pinned = target.parts._replace(netloc=f"{ip}:{target.port}").geturl()
        headers = {"host": target.parts.netloc.rpartition("@")[2]}
        extensions = {"sni_hostname": target.host} if target.parts.scheme == "https" else {}
        with trio.move_on_after(self._timeout) as deadline:
            try:
                request = self._client.build_request("GET", pinned, headers=headers, extensions=extensions)
                resp = await self._client.send(request, stream=True)
                try:
                    if resp.status_code != 200:
                        raise MediaFetchError(f"{url}: HTTP {resp.status_code}")
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > self._max:
                            raise MediaFetchError(f"{url}: larger than {self._max >> 20} MB")
                finally:
                    await resp.aclose()
            except httpx.HTTPError as exc:
                raise MediaFetchError(f"{url}: {type(exc).__name__}") from exc
        if deadline.cancelled_caught:
            raise MediaFetchError(f"{url}: not fetched within {self._timeout:g} s")
        kind = resp.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
        return bytes(data), kind
