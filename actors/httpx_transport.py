"""``Transport`` over httpx: for cold paths and as the comparison for the h11 hot path.

httpx is convenient and well kept, but measured here it manages ~1,000 POSTs
per CPU-second with one request in flight and ~230 with 50, so the actor's
hot path uses ``H11Pool`` and this stays for low-rate traffic.
"""

from __future__ import annotations

from typing import final

import httpx

from actors.transport import ConnectError, Headers, RequestTimeout, Response, ResponseLostError


@final
class HttpxTransport:
    def __init__(self, base_url: str, *, timeout: float = 10.0, max_connections: int = 16) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections),
            trust_env=False,
        )

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        try:
            resp = await self._client.request(method.decode(), target.decode(), headers=headers, content=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ConnectError(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise RequestTimeout(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ResponseLostError(str(exc)) from exc
        return Response(resp.status_code, list(resp.headers.raw), resp.content)

    async def aclose(self) -> None:
        await self._client.aclose()
