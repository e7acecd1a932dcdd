"""A cold-path client of Meta's Graph API: number management, webhook subscriptions, tokens.

Not the send path (that is the actor's own pool, ``channels.cloud``): these are
a handful of operator-driven or periodic calls, so httpx with a client the
caller opens once and shares. Each call:

- goes to ``{base_url}/{version}/{path}`` with ``Authorization: Bearer``;
- decodes a 2xx body into the Struct the caller names (msgspec, unknown keys ignored);
- raises ``GraphError`` with Meta's ``error`` object (code, subcode, message,
  ``fbtrace_id``, the user-facing title and text) for a 4xx/5xx answer, or
  ``GraphUnreachable`` when no answer came;
- notes the ``facebook-api-version`` answer header: the version that actually
  served the call (Meta serves an expired version's calls with the next one).

Error tree::

    GraphError                 Meta answered with an error (or an unreadable body)
    GraphUnreachable           no answer: connection refused, reset, timed out
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeVar, final

import httpx
import msgspec
import structlog

log = structlog.get_logger()

T = TypeVar("T")

VERSION_HEADER: Final = "facebook-api-version"
_MAX_BODY: Final = 4 << 20  # a management answer is small JSON; a page of templates stays far below


class GraphError(Exception):
    """Meta refused the call: its error object, as it came."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        kind: str = "",
        fbtrace_id: str = "",
        user_title: str = "",
        user_message: str = "",
        details: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.subcode = subcode
        self.kind = kind
        self.fbtrace_id = fbtrace_id
        self.user_title = user_title
        self.user_message = user_message
        self.details = details

    @property
    def reason(self) -> str:
        """What an operator is told went wrong: Meta's user-facing title and text when it gave
        them (a refused template says what to change there), else its message and details."""
        if self.user_title and self.user_message:
            return f"{self.user_title}: {self.user_message}"
        reason = self.user_message or self.message
        if self.details and self.details not in reason:
            reason = f"{reason}: {self.details}"
        return reason

    def __str__(self) -> str:
        code = (
            ""
            if self.code is None
            else f" code {self.code}" + (f"/{self.subcode}" if self.subcode is not None else "")
        )
        user = f" ({self.user_title}: {self.user_message})" if self.user_message else ""
        trace = f" [fbtrace_id {self.fbtrace_id}]" if self.fbtrace_id else ""
        return f"HTTP {self.status}{code}: {self.message}{user}{trace}"


class GraphUnreachable(GraphError):
    """No answer from Graph (connection refused, reset, timeout): the call may be tried again."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)

    def __str__(self) -> str:
        return f"Graph API unreachable: {self.message}"


class _ErrorData(msgspec.Struct):
    details: str = ""


class _ErrorBody(msgspec.Struct):
    message: str = ""
    error_data: _ErrorData | None = None
    type: str = ""
    code: int | None = None
    error_subcode: int | None = None
    fbtrace_id: str = ""
    error_user_title: str = ""
    error_user_msg: str = ""


class _Envelope(msgspec.Struct):
    error: _ErrorBody


class Success(msgspec.Struct):
    """``{"success": true}``: what most management calls answer."""

    success: bool = False


_envelope: Final = msgspec.json.Decoder(_Envelope)


def graph_error(status: int, body: bytes) -> GraphError:
    """The error of a non-2xx answer (Meta's envelope, or what the body says if it is not one)."""
    try:
        err = _envelope.decode(body).error
    except msgspec.DecodeError:
        text = body[:300].decode("utf-8", "replace").strip()
        return GraphError(status, text or f"HTTP {status} without a Graph error body")
    return GraphError(
        status,
        err.message or f"HTTP {status}",
        code=err.code,
        subcode=err.error_subcode,
        kind=err.type,
        fbtrace_id=err.fbtrace_id,
        user_title=err.error_user_title,
        user_message=err.error_user_msg,
        details=err.error_data.details if err.error_data is not None else "",
    )


@final
class GraphClient:
    """Calls of one Graph API version with one token (a WABA's system-user token)."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        base_url: str,
        version: str,
        token: Callable[[], str],
        timeout: float = 30.0,
    ) -> None:
        """``token`` is read per call (a rotated credential file takes effect at once)."""
        self._client = client
        self._base = base_url.rstrip("/")
        self.version = version
        self._token = token
        self._timeout = timeout
        self.served_version: str | None = None  # ``facebook-api-version`` of the last answer

    def url(self, path: str) -> str:
        return f"{self._base}/{self.version}/{path.lstrip('/')}"

    def on_host(self, url: str) -> bool:
        """Whether ``url`` is on this Graph host (a link Meta gave may be followed with our token)."""
        return url.startswith(self._base + "/")

    async def get(self, path: str, type: type[T], params: Mapping[str, str] | None = None) -> T:
        return await self._call("GET", path, type, params=params)

    async def post(
        self,
        path: str,
        type: type[T],
        *,
        json: object = None,
        data: Mapping[str, str] | None = None,
    ) -> T:
        """POST a JSON body (``json``) or a form (``data``)."""
        return await self._call("POST", path, type, json=json, data=data)

    async def delete(self, path: str, type: type[T], params: Mapping[str, str] | None = None) -> T:
        return await self._call("DELETE", path, type, params=params)

    async def _call(
        self,
        method: str,
        path: str,
        type: type[T],
        *,
        params: Mapping[str, str] | None = None,
        json: object = None,
        data: Mapping[str, str] | None = None,
    ) -> T:
        content: bytes | None = None
        headers: dict[str, str] = {}
        if json is not None:
            content = msgspec.json.encode(json)
            headers["content-type"] = "application/json"
        body = await self.call_raw(method, path, params=params, content=content, data=data, headers=headers)
        try:
            return msgspec.json.decode(body, type=type)
        except msgspec.DecodeError as exc:
            raise GraphError(200, f"unexpected answer to {method} {path}: {exc}") from exc

    async def call_raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """One call, its 2xx body as it came. ``path`` may be a whole URL on this Graph host (a
        ``paging.next`` link): a URL anywhere else is refused, so the token never leaves for it."""
        url = self.url(path) if "://" not in path else path
        if not self.on_host(url):
            raise GraphError(0, f"refused to call {url.split('?')[0][:200]}: not {self._base}")
        sent = {"authorization": f"Bearer {self._token()}", **(headers or {})}
        try:
            resp = await self._client.request(
                method, url, params=params, content=content, data=data, headers=sent, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise GraphUnreachable(f"{method} {url.split('?')[0]}: {exc!r}") from exc
        served = resp.headers.get(VERSION_HEADER)
        if served:
            self.served_version = served
        body = resp.content[:_MAX_BODY]
        if resp.status_code >= 400:
            error = graph_error(resp.status_code, body)
            log.info(
                "graph.refused",
                method=method,
                path=path.split("?")[0],
                status=resp.status_code,
                code=error.code,
            )
            raise error
        return body


__all__ = ["VERSION_HEADER", "GraphClient", "GraphError", "GraphUnreachable", "Success", "graph_error"]
