"""Any front door takes any request; one for a bucket another daemon owns goes to that daemon.

Outermost ASGI layer of a daemon that shares buckets with others (``dispatcher.ownership``).
For a request about one bucket (``routing``) it asks who owns the bucket now:

- this daemon: the request goes on to the front door behind, as if nothing stood in between
  (a create's body, read here to find its sender, is handed on as it came);
- another daemon: the request is sent to the owner and its answer returned unchanged: status,
  body and every header but the hop-by-hop ones. It goes over the owner's lane when its record
  has one (``lane_client``: one multiplexed connection per peer, straight into the owner's ASGI
  app, see ``lane_server``), else as HTTP to its peer address (one ``H11Pool`` per peer). The
  forwarded request carries ``HOP_HEADER``; a request carrying it, or come over a lane, is never
  forwarded again (one hop at most, no loops while ownership moves);
- nobody (between two owners, or no quorum): 503 with ``Retry-After``, nothing stored.

A batch is split by its items' buckets: each owner gets its items as a batch of their own (this
daemon's go to the front door behind), concurrently, and the results are put back in the order
of the items; the items of an unowned bucket, or of an owner that could not answer, get a 503
error each. Credentials are checked before a body is read, as the front door does (an
onboarding's add, whose number is in its body, is read only with the admin token).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Final, final

import attrs
import msgspec
import structlog
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveEvent, ASGISendEvent, HTTPScope, Scope
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send

from actors.http.pool import H11Pool
from actors.transport import Response, ResponseLostError, TransportError
from dispatcher.core.buckets import Buckets
from dispatcher.core.directory import Directory
from dispatcher.core.params import first, parse_body
from dispatcher.core.twilio import TwilioError
from dispatcher.frontdoor import batch, errors, limits, routing
from dispatcher.frontdoor.admin import bearer_matches, normalize_number
from dispatcher.frontdoor.lane_client import LaneClient
from dispatcher.frontdoor.lane_wire import SCHEME as LANE_SCHEME
from dispatcher.messages.auth import Authenticator
from dispatcher.messages.idempotency import HEADERS as IDEMPOTENCY_HEADERS
from dispatcher.messages.rules import CreateRules
from dispatcher.ops.cluster import AskStatus, OwnerTable
from dispatcher.ops.metrics import DispatcherCollector
from dispatcher.ops.operations import Status
from dispatcher.ownership.interface import Owner

log = structlog.get_logger()

HOP_HEADER: Final = b"x-wadispatch-forwarded-by"
# Not passed on either way: they describe one connection, not the request (RFC 9110 7.6.1).
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"content-length",
        HOP_HEADER,
    }
)
PEER_MAX_RESPONSE: Final = 64 << 20  # a forwarded media download is buffered whole
Headers = list[tuple[bytes, bytes]]


@final
class PeerPool:
    """Connections to the other daemons, one client per peer address: a lane (``lane://host:port``,
    one multiplexed connection) or HTTP keep-alive (``http://host:port``, up to ``max_connections``)."""

    def __init__(
        self,
        *,
        max_connections: int = 64,
        request_timeout: float = 30.0,
        max_request_bytes: int = limits.MAX_REQUEST_BYTES,
    ) -> None:
        self._max_connections = max_connections
        self._request_timeout = request_timeout
        self._max_request_bytes = max_request_bytes
        self._pools: dict[str, H11Pool | LaneClient] = {}

    async def request(
        self, address: str, method: bytes, target: bytes, headers: Headers, body: bytes
    ) -> Response:
        """One request to the peer at ``address``; raises ``TransportError`` as ``H11Pool`` does
        (``ConnectError``: not applied; the others: it may have been)."""
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = self._open(address)
        return await pool.request(method, target, headers, body)

    def _open(self, address: str) -> H11Pool | LaneClient:
        if address.startswith(LANE_SCHEME):
            return LaneClient(
                address,
                request_timeout=self._request_timeout,
                max_request=self._max_request_bytes,
                max_response=PEER_MAX_RESPONSE,
            )
        return H11Pool(
            address,
            max_connections=self._max_connections,
            request_timeout=self._request_timeout,
            max_response_body=PEER_MAX_RESPONSE,
        )

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def status_asker(pool: PeerPool, admin_token: str | None, owner_id: str) -> AskStatus:
    """How this daemon asks another for its ``/admin/v1/status`` (the cluster view): over the
    peer pool, with the admin token the daemons of one cluster share."""
    headers: Headers = [(HOP_HEADER, owner_id.encode())]
    if admin_token is not None:
        headers.append((b"authorization", b"Bearer " + admin_token.encode()))

    async def ask(address: str) -> Status:
        if admin_token is None:
            raise RuntimeError("no [admin] token to ask the other daemons with")
        answer = await pool.request(address, b"GET", b"/admin/v1/status", headers, b"")
        if answer.status != 200:
            raise RuntimeError(f"its admin API answered HTTP {answer.status}")
        return _status_decoder.decode(answer.body)

    return ask


@attrs.define
class ForwardingStatistics:
    forwarded: int = 0  # requests (and batch parts) answered by another daemon
    unowned: int = 0  # refused with 503: their bucket had no owner
    failed: int = 0  # the owner could not be reached or did not answer


def add_metrics(collector: DispatcherCollector, stats: ForwardingStatistics) -> None:
    """The forwarding counters on /metrics (the daemon adds them when it forwards: ``[cluster]``)."""
    for name, doc in (
        ("forwarded", "Requests (and batch parts) this front door had another daemon answer."),
        ("unowned", "Requests (and batch parts) refused with 503: their bucket had no owner."),
        ("failed", "Forwarded requests whose owner could not be reached or did not answer (503)."),
    ):
        collector.add_counter(f"wadispatch_forward_{name}", doc, functools.partial(getattr, stats, name))


class _BodyError(Exception):
    def __init__(self, error: TwilioError, close: bool = False) -> None:
        self.error = error
        self.close = close


class _Disconnected(Exception):
    pass


class _Result(msgspec.Struct):
    """One batch result, kept as the owner wrote it; ``sid`` tells an accepted one."""

    sid: str | None = None


class _Answer(msgspec.Struct):
    results: list[msgspec.Raw]


class _NumberField(msgspec.Struct):
    """The one field of an onboarding's add that says where it goes."""

    number: str


class _Merged(msgspec.Struct):
    accepted: int
    rejected: int
    results: list[msgspec.Raw]


_answer_decoder: Final = msgspec.json.Decoder(_Answer)
_status_decoder: Final = msgspec.json.Decoder(Status)
_result_decoder: Final = msgspec.json.Decoder(_Result)
_number_decoder: Final = msgspec.json.Decoder(_NumberField)
_items_encoder: Final = msgspec.json.Encoder()


def _unowned_error(bucket: int) -> TwilioError:
    return TwilioError(
        503,
        20503,
        f"Service unavailable: bucket {bucket} has no owner right now; nothing was stored. Retry shortly.",
    )


def _unreachable_error(ambiguous: bool) -> TwilioError:
    detail = (
        "it may have been applied: retry with the same Idempotency-Key"
        if ambiguous
        else "nothing was applied: retry shortly"
    )
    return TwilioError(
        503, 20503, f"Service unavailable: the daemon owning this request's bucket did not answer; {detail}."
    )


@final
class Forwarder:
    """ASGI app: requests served by the owner of their bucket (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIFramework,
        *,
        buckets: Buckets,
        directory: Directory,
        owners: OwnerTable,
        rules: CreateRules,
        auth: Authenticator,
        pool: PeerPool,
        max_request_bytes: int,
        body_timeout: float = limits.BODY_TIMEOUT,
        retry_after: int = 1,
        admin_token: str | None = None,
    ) -> None:
        self._app = app
        self._admin_token = admin_token
        self._buckets = buckets
        self._directory = directory
        self._owners = owners
        self._rules = rules
        self._auth = auth
        self._pool = pool
        self._max_request_bytes = max_request_bytes
        self._body_timeout = body_timeout
        self._retry_after = str(retry_after).encode()
        self.statistics = ForwardingStatistics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == HOP_HEADER for name, _ in scope["headers"]):
            return await self._app(scope, receive, send)
        where = routing.route(scope["method"], scope["path"], self._buckets, self._directory)
        try:
            if isinstance(where, routing.InBucket):
                return await self._to_bucket(where.bucket, scope, receive, send, None)
            if isinstance(where, routing.Create):
                return await self._create(where.account, scope, receive, send)
            if isinstance(where, routing.Batch):
                return await self._batch(scope, receive, send)
            if isinstance(where, routing.AdminNumber):
                return await self._admin_number(scope, receive, send)
        except _BodyError as exc:
            return await _respond(
                send, exc.error.status, exc.error.body(), [(b"connection", b"close")] if exc.close else []
            )
        except _Disconnected:
            return  # the client left before its body arrived: nothing was done
        await self._app(scope, receive, send)

    # -- one bucket -----------------------------------------------------------------------

    async def _to_bucket(
        self, bucket: int, scope: HTTPScope, receive: Receive, send: Send, body: bytes | None
    ) -> None:
        owner = self._owners.owner(bucket)
        if owner is None:
            self.statistics.unowned += 1
            error = _unowned_error(bucket)
            return await _respond(send, error.status, error.body(), [(b"retry-after", self._retry_after)])
        if owner.owner_id == self._owners.owner_id:
            return await self._app(scope, receive if body is None else _replay(body, receive), send)
        if body is None:
            body = await self._read(scope, receive)
        answer = await self._forward(owner, scope, body)
        headers = [(name, value) for name, value in answer.headers if name.lower() not in _HOP_BY_HOP]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})

    async def _forward(self, owner: Owner, scope: HTTPScope, body: bytes) -> Response:
        """The owner's answer, or one saying it could not be had (503, with ``Retry-After``)."""
        target = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        headers = [(name, value) for name, value in scope["headers"] if name.lower() not in _HOP_BY_HOP]
        headers.append((HOP_HEADER, self._owners.owner_id.encode()))
        try:
            answer = await self._pool.request(owner.peer, scope["method"].encode(), target, headers, body)
        except TransportError as exc:
            self.statistics.failed += 1
            log.warning("forward.failed", owner=owner.owner_id, address=owner.peer, error=repr(exc))
            error = _unreachable_error(isinstance(exc, ResponseLostError))
            return Response(
                error.status,
                [(b"content-type", b"application/json"), (b"retry-after", self._retry_after)],
                error.body(),
            )
        self.statistics.forwarded += 1
        return answer

    # -- a create: its sender's bucket --------------------------------------------------------

    async def _create(self, account: str, scope: HTTPScope, receive: Receive, send: Send) -> None:
        header = _lookup(scope["headers"])
        try:
            self._auth.authenticate(header(b"authorization"), account)
        except TwilioError:
            return await self._app(scope, receive, send)  # refused behind, its body never read
        body = await self._read(scope, receive)
        try:
            params = parse_body(header(b"content-type"), body)
        except TwilioError:
            return await self._app(scope, _replay(body, receive), send)
        sender = self._rules.sender_of(
            account, first(params, "To"), first(params, "From"), first(params, "MessagingServiceSid")
        )
        if sender is None:  # refused wherever it is judged: here
            return await self._app(scope, _replay(body, receive), send)
        await self._to_bucket(self._buckets.index(sender), scope, receive, send, body)

    # -- an onboarding's add: its number's bucket ------------------------------------------------

    async def _admin_number(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        if not bearer_matches(_lookup(scope["headers"])(b"authorization"), self._admin_token):
            return await self._app(scope, receive, send)  # refused behind, its body never read
        body = await self._read(scope, receive)
        try:
            number = normalize_number(_number_decoder.decode(body).number)
        except msgspec.DecodeError:  # refused behind, with the reason
            return await self._app(scope, _replay(body, receive), send)
        await self._to_bucket(self._buckets.index(number), scope, receive, send, body)

    # -- a batch: split by bucket, put back in order ---------------------------------------------

    async def _batch(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        header = _lookup(scope["headers"])
        account = self._auth.account_for(header(b"authorization"))
        if account is None or any(header(name.lower().encode()) is not None for name in IDEMPOTENCY_HEADERS):
            return await self._app(scope, receive, send)  # refused behind, as it would be anyway
        body = await self._read(scope, receive)
        try:
            items = batch.decode(body)
        except TwilioError:
            return await self._app(scope, _replay(body, receive), send)
        parts = self._split(account, items)
        if set(parts) <= {None}:
            return await self._app(scope, _replay(body, receive), send)  # every item is ours
        results: list[msgspec.Raw | None] = [None] * len(items)

        async def run(owner: Owner | None, members: list[int]) -> None:
            part = _items_encoder.encode([items[i] for i in members])
            answered = await self._part(owner, scope, part)
            for i, result in zip(members, _results(answered, len(members)), strict=True):
                results[i] = result

        async with trio.open_nursery() as nursery:
            for key, members in parts.items():
                if isinstance(key, int):  # no owner: each of its items refused
                    self.statistics.unowned += 1
                    raw = msgspec.Raw(msgspec.json.encode({"error": _unowned_error(key).error_body()}))
                    for i in members:
                        results[i] = raw
                    continue
                nursery.start_soon(run, key, members)
        merged = [r for r in results if r is not None]
        accepted = sum(1 for r in merged if _result_decoder.decode(r).sid is not None)
        answer = msgspec.json.encode(_Merged(accepted, len(merged) - accepted, merged))
        await _respond(send, 200, answer, [])

    def _split(self, account: str, items: Sequence[batch.BatchItem]) -> dict[Owner | int | None, list[int]]:
        """Item indexes by where they go: an owner, None (this daemon), or an unowned bucket's index."""
        parts: dict[Owner | int | None, list[int]] = {}
        me = self._owners.owner_id
        for i, item in enumerate(items):
            sender = self._rules.sender_of(account, item.to, item.from_, item.messaging_service_sid)
            key: Owner | int | None = None
            if sender is not None:
                bucket = self._buckets.index(sender)
                owner = self._owners.owner(bucket)
                key = bucket if owner is None else None if owner.owner_id == me else owner
            parts.setdefault(key, []).append(i)
        return parts

    async def _part(self, owner: Owner | None, scope: HTTPScope, body: bytes) -> Response:
        """A part of a batch answered by ``owner`` (None: the front door behind)."""
        if owner is not None:
            return await self._forward(owner, scope, body)
        headers = [(n, v) for n, v in scope["headers"] if n.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        captured = _Captured()
        part_scope: HTTPScope = {**scope, "headers": headers}
        await self._app(part_scope, _replay(body, None), captured.send)
        return Response(captured.status, captured.headers, b"".join(captured.chunks))

    async def _read(self, scope: HTTPScope, receive: Receive) -> bytes:
        """The whole body: at most ``max_request_bytes``, all of it within ``body_timeout``."""
        length = _lookup(scope["headers"])(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_request_bytes:
            raise _BodyError(errors.body_too_large())
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self._body_timeout):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _Disconnected
                size += len(message["body"])
                if size > self._max_request_bytes:
                    raise _BodyError(errors.body_too_large())
                chunks.append(message["body"])
                if not message["more_body"]:
                    return b"".join(chunks)
        raise _BodyError(errors.body_timed_out(self._body_timeout), close=True)


def _results(answer: Response, count: int) -> list[msgspec.Raw]:
    """A part's results in order: as its owner wrote them, or its error for each item."""
    if answer.status == 200:
        try:
            results = _answer_decoder.decode(answer.body).results
        except msgspec.DecodeError:
            results = []
        if len(results) == count:
            return results
    try:
        body = msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        body = None
    if not (isinstance(body, dict) and "code" in body and "message" in body):
        body = _unreachable_error(True).error_body()
    raw = msgspec.Raw(msgspec.json.encode({"error": body}))
    return [raw] * count


@final
class _Captured:
    """An ASGI ``send`` that keeps the answer (a batch part answered here)."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: Headers = []
        self.chunks: list[bytes] = []

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            self.chunks.append(bytes(message.get("body", b"")))


def _replay(body: bytes, receive: Receive | None) -> Receive:
    """A ``receive`` that gives ``body`` whole, then what the client's connection says next."""
    given = False

    async def replay() -> ASGIReceiveEvent:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is None:
            await trio.sleep_forever()
        return await receive()

    return replay


def _lookup(raw: Iterable[tuple[bytes, bytes]]) -> Callable[[bytes], str | None]:
    """First value per (lower-case) name, latin-1 as werkzeug decodes them."""
    headers: dict[bytes, str] = {}
    for name, value in raw:
        headers.setdefault(name.lower(), value.decode("latin-1"))
    return headers.get


async def _respond(send: Send, status: int, body: bytes, extra: Headers) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
