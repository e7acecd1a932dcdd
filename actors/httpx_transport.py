"""``Transport`` over httpx: for cold paths and as the comparison for the h11 hot path.

httpx is convenient and well kept, but measured here it manages ~1,000 POSTs
per CPU-second with one request in flight and ~230 with 50, so the actor's
hot path uses ``H11Pool`` and this stays for low-rate traffic. Its answers are
bounded like the pool's: streamed, refused on a Content-Length above
``max_response_body`` and counted as they come in (``ResponseTooLargeError``).
"""

from __future__ import annotations

from typing import final

import httpx

from actors.http.pool import DEFAULT_MAX_RESPONSE_BODY
from actors.transport import (
    ConnectError,
    Headers,
    RequestTimeout,
    Response,
    ResponseLostError,
    ResponseTooLargeError,
)


@final
class HttpxTransport:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 16,
        max_response_body: int = DEFAULT_MAX_RESPONSE_BODY,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections),
            trust_env=False,
            # Bodies come as sent, so the bytes counted are the bytes kept (no decompression).
            headers={"accept-encoding": "identity"},
        )
        self._base_url = base_url
        self._max_body = max_response_body

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> Response:
        try:
            request = self._client.build_request(
                method.decode(), target.decode(), headers=headers, content=body
            )
            resp = await self._client.send(request, stream=True)
            try:
                return Response(resp.status_code, list(resp.headers.raw), await self._read(resp))
            finally:
                await resp.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ConnectError(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise RequestTimeout(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ResponseLostError(str(exc)) from exc

    async def _read(self, resp: httpx.Response) -> bytes:
        """The body, refused on its Content-Length or as soon as the count passes the limit."""
        limit = self._max_body
        announced = resp.headers.get("content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise ResponseTooLargeError(
                f"answer from {self._base_url} refused: Content-Length {announced} above the "
                f"{limit}-byte response limit",
                limit=limit,
                announced=int(announced),
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLargeError(
                    f"answer from {self._base_url} refused: a streamed body above the "
                    f"{limit}-byte response limit",
                    limit=limit,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()
