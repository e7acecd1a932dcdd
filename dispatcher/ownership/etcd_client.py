"""A small client of etcd v3's JSON gateway (grpc-gateway), over httpx, from Trio.

Only what ownership (and the cluster's roster) needs: leases (grant, keepalive, revoke), a
transaction that creates a key only if absent, a conditional delete, put and delete, a prefix
range and a watch.
Keys and values travel base64-encoded, 64-bit integers as strings (the gateway's
JSON mapping of the protobufs; see etcd's ``Documentation/dev-guide/api_grpc_gateway.md``).

Every call tries the configured endpoints in turn, starting with the last one
that answered, within ``timeout`` seconds in all: a member that is down, or
cannot reach a quorum (etcd then answers "no leader" or times the request out),
moves the call on to the next member. ``EtcdUnavailableError`` means none could
serve it: the cluster has no quorum, or none of it is reachable from here.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from typing import Final, TypeVar, final

import httpx
import msgspec
import structlog
import trio

log = structlog.get_logger()

T = TypeVar("T")

# gRPC codes that mean "try again elsewhere or later" rather than "refused".
_UNAVAILABLE_CODES: Final = frozenset(
    {4, 8, 10, 13, 14}
)  # deadline, exhausted, aborted, internal, unavailable


class EtcdError(Exception):
    """etcd refused a request (bad auth, a malformed request): another member would refuse it too."""


class EtcdUnavailableError(EtcdError):
    """No member could serve the request in time: no quorum, or no member reachable."""


class KeyValue(msgspec.Struct, frozen=True):
    key: str = ""
    value: str = ""
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0

    @property
    def key_bytes(self) -> bytes:
        return base64.b64decode(self.key)

    @property
    def value_bytes(self) -> bytes:
        return base64.b64decode(self.value)


class _Header(msgspec.Struct, frozen=True):
    revision: int = 0


class _Range(msgspec.Struct, frozen=True):
    header: _Header = _Header()
    kvs: list[KeyValue] = msgspec.field(default_factory=list)


class _Grant(msgspec.Struct, frozen=True):
    ID: int = 0
    TTL: int = 0


class _KeepAliveResult(msgspec.Struct, frozen=True):
    ID: int = 0
    TTL: int = 0


class _KeepAlive(msgspec.Struct, frozen=True):
    result: _KeepAliveResult | None = None


class _Op(msgspec.Struct, frozen=True):
    response_range: _Range | None = None


class _Txn(msgspec.Struct, frozen=True):
    header: _Header = _Header()
    succeeded: bool = False
    responses: list[_Op] = msgspec.field(default_factory=list)


class _Error(msgspec.Struct, frozen=True):
    error: str = ""
    message: str = ""
    code: int = 0


class _Token(msgspec.Struct, frozen=True):
    token: str = ""


class _WatchResult(msgspec.Struct, frozen=True):
    header: _Header = _Header()
    created: bool = False
    canceled: bool = False
    events: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _WatchMessage(msgspec.Struct, frozen=True):
    result: _WatchResult | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (clientv3's ``GetPrefixRangeEnd``)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


_error_decoder = msgspec.json.Decoder(_Error, strict=False)


@final
class EtcdClient:
    """Calls to an etcd cluster's JSON gateway through ``client`` (its TLS and pool set by the caller)."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        endpoints: Sequence[str],
        timeout: float = 2.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self._client = client
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._timeout = timeout
        self._credentials = (username, password) if username is not None and password is not None else None
        self._token: str | None = None

    # -- transport ------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, object], decoder: msgspec.json.Decoder[T]) -> T:
        """POST ``body`` to ``path`` on a member that can serve it; decoded by ``decoder``."""
        payload = msgspec.json.encode(body)
        last: Exception | None = None
        with trio.move_on_after(self._timeout):
            for attempt in range(2 * len(self._endpoints)):
                index = (self._current + attempt) % len(self._endpoints)
                endpoint = self._endpoints[index]
                try:
                    resp = await self._client.post(
                        endpoint + path, content=payload, headers=await self._headers()
                    )
                except httpx.HTTPError as exc:
                    last = exc
                    continue
                error = _error_of(resp)
                if error is None:
                    self._current = index
                    return decoder.decode(resp.content)
                if error.code == 16 and self._credentials is not None:  # unauthenticated: token expired
                    self._token = None
                    last = EtcdError(error.message or error.error)
                    continue
                if error.code not in _UNAVAILABLE_CODES and resp.status_code < 500:
                    raise EtcdError(f"{path}: {error.message or error.error} (code {error.code})")
                last = EtcdUnavailableError(f"{endpoint}: {error.message or error.error}")
        raise EtcdUnavailableError(f"{path}: no etcd member answered within {self._timeout:g} s ({last!r})")

    async def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._credentials is not None:
            if self._token is None:
                self._token = await self._authenticate()
            headers["authorization"] = self._token
        return headers

    async def _authenticate(self) -> str:
        assert self._credentials is not None
        name, password = self._credentials
        payload = msgspec.json.encode({"name": name, "password": password})
        last: Exception | None = None
        for endpoint in self._endpoints:
            try:
                resp = await self._client.post(endpoint + "/v3/auth/authenticate", content=payload)
            except httpx.HTTPError as exc:
                last = exc
                continue
            error = _error_of(resp)
            if error is not None:
                raise EtcdError(f"etcd authentication failed: {error.message or error.error}")
            return msgspec.json.decode(resp.content, type=_Token).token
        raise EtcdUnavailableError(f"etcd authentication: no member answered ({last!r})")

    # -- leases ---------------------------------------------------------------------

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl in seconds)."""
        got = await self._call("/v3/lease/grant", {"TTL": ttl}, _grant_decoder)
        if got.ID == 0 or got.TTL <= 0:
            raise EtcdError(f"lease grant returned no lease ({got!r})")
        return got.ID, got.TTL

    async def keepalive(self, lease_id: int) -> int:
        """Renew ``lease_id``: its ttl from now, 0 if the lease is gone (expired or revoked)."""
        got = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)}, _keepalive_decoder)
        return 0 if got.result is None else got.result.TTL

    async def revoke(self, lease_id: int) -> None:
        """End ``lease_id`` now: every key attached to it is deleted."""
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease_id)}, _error_decoder)
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # -- keys -----------------------------------------------------------------------

    async def create(self, key: bytes, value: bytes, lease_id: int) -> tuple[bool, KeyValue | None, int]:
        """Create ``key`` under ``lease_id`` only if it does not exist.

        Returns (created, the key as it is when not created, the revision of the answer):
        created, the key's create revision is that revision.
        """
        k = _b64(key)
        got = await self._call(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease_id)}}],
                "failure": [{"request_range": {"key": k}}],
            },
            _txn_decoder,
        )
        if got.succeeded:
            return True, None, got.header.revision
        held = None
        for op in got.responses:
            if op.response_range is not None and op.response_range.kvs:
                held = op.response_range.kvs[0]
        return False, held, got.header.revision

    async def delete_if_created(self, key: bytes, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the one created at ``create_revision`` (ours)."""
        k = _b64(key)
        got = await self._call(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": str(create_revision)}
                ],
                "success": [{"request_delete_range": {"key": k}}],
            },
            _txn_decoder,
        )
        return got.succeeded

    async def put(self, key: bytes, value: bytes, lease_id: int) -> None:
        await self._call(
            "/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": str(lease_id)}, _error_decoder
        )

    async def delete(self, key: bytes) -> None:
        """Delete ``key`` if it exists."""
        await self._call("/v3/kv/deleterange", {"key": _b64(key)}, _error_decoder)

    async def range_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (linearizable: needs a quorum), and the store's revision."""
        got = await self._call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}, _range_decoder
        )
        return got.kvs, got.header.revision

    async def watch_prefix(self, prefix: bytes, start_revision: int) -> AsyncIterator[int]:
        """Yield the revision of each batch of changes under ``prefix`` after ``start_revision``,
        until the stream breaks (raises ``EtcdUnavailableError``): a wake-up, the keys are read again."""
        body = msgspec.json.encode(
            {
                "create_request": {
                    "key": _b64(prefix),
                    "range_end": _b64(prefix_end(prefix)),
                    "start_revision": str(start_revision),
                }
            }
        )
        endpoint = self._endpoints[self._current]
        try:
            async with self._client.stream(
                "POST", endpoint + "/v3/watch", content=body, headers=await self._headers(), timeout=None
            ) as resp:
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    message = _watch_decoder.decode(line)
                    if message.result is None:
                        raise EtcdUnavailableError(f"watch on {endpoint} ended: {line[:200]}")
                    if message.result.canceled:
                        raise EtcdUnavailableError(f"watch on {endpoint} was cancelled")
                    if message.result.events:
                        yield message.result.header.revision
        except httpx.HTTPError as exc:
            raise EtcdUnavailableError(f"watch on {endpoint}: {exc!r}") from exc
        raise EtcdUnavailableError(f"watch on {endpoint} ended")


def _error_of(resp: httpx.Response) -> _Error | None:
    """The gRPC error in a gateway answer (its status may be 200 on a stream), or None."""
    if resp.status_code == 200 and b'"error"' not in resp.content[:64]:
        return None
    try:
        error = _error_decoder.decode(resp.content)
    except msgspec.DecodeError:
        return _Error(error=f"HTTP {resp.status_code}", message=resp.text[:200], code=14)
    if not (error.error or error.message):
        return None if resp.status_code == 200 else _Error(error=f"HTTP {resp.status_code}", code=14)
    return error


_grant_decoder = msgspec.json.Decoder(_Grant, strict=False)
_keepalive_decoder = msgspec.json.Decoder(_KeepAlive, strict=False)
_txn_decoder = msgspec.json.Decoder(_Txn, strict=False)
_range_decoder = msgspec.json.Decoder(_Range, strict=False)
_watch_decoder = msgspec.json.Decoder(_WatchMessage, strict=False)
