"""The floors of every layer, measured in one run, so each wadispatch figure is also a ratio.

Servers (one subprocess each, measured per CPU-second of that subprocess):
    * ``quart``: hello-world quart-trio on hypercorn (trio), tiny JSON POST;
    * ``asgi``: a raw ASGI app on hypercorn (trio), same request;
    * ``h11``: a plain h11 server on trio, same request.
Clients (this process, per CPU-second of this process, against the ``h11`` server):
    * ``h11 loop``: one trio stream and one ``h11.Connection``, the cheapest correct client;
    * ``H11Pool`` (the actor's hot path) with 1, 10, 50 and 100 requests in flight.
Storage and codecs (this process):
    * LMDB durable commits (``sync=True``) of 1, 100 and 1000 records per transaction;
    * msgspec msgpack encode / decode of a ``MessageRecord`` vs stdlib json.

Usage::

    .venv/bin/python -m bench.floor [--duration 2] [--json]

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import lmdb
import msgspec
import trio

from actors.http.pool import H11Pool
from bench._harness import cpu_seconds, serve_lifespan
from dispatcher.core.models import MessageRecord, record_decoder, record_encoder

TARGET = b"/v1/messages"
BODY = (
    b'{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567",'
    b'"type":"text","text":{"preview_url":false,"body":"Your code is 123456. It expires in 10 minutes."}}'
)
# The Cloud API's answer to a send (bench.peer's pywa client parses it as such).
REPLY = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"15551234567","wa_id":"15551234567"}],'
    b'"messages":[{"id":"wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"authorization", b"Bearer bench-token")]
SERVERS = ("quart", "asgi", "h11")
POOL_INFLIGHT = (1, 10, 50, 100)
LMDB_BATCHES = (1, 100, 1000)
WARMUP = 0.3


# -- servers (each runs as ``python -m bench.floor --serve KIND`` and prints its port) ---------------


def _quart_app() -> Any:
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("floor")

    @app.post("/v1/messages")
    async def create() -> Response:
        await request.get_data()
        return Response(REPLY, status=201, content_type="application/json")

    return app


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(REPLY))],
        }
    )
    await send({"type": "http.response.body", "body": REPLY})


async def _serve_hypercorn(app: Any) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    cfg = Config()
    cfg.bind = ["127.0.0.1:0"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.keep_alive_timeout = 75.0

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, cfg)
        print(binds[0].rsplit(":", 1)[1], flush=True)


async def _h11_connection(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(REPLY))]
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.EndOfMessage):
                out = conn.send(h11.Response(status_code=201, headers=headers)) or b""
                out += conn.send(h11.Data(data=REPLY)) or b""
                out += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(out)
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        return


async def _serve_h11() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(_h11_connection, listeners)


def serve(kind: str) -> None:
    if kind == "quart":
        trio.run(_serve_hypercorn, _quart_app())
    elif kind == "asgi":
        trio.run(_serve_hypercorn, _asgi_app)
    elif kind == "h11":
        trio.run(_serve_h11)
    else:
        raise SystemExit(f"unknown server {kind!r}")


class Server:
    """A floor server subprocess; stopped by its pid on exit."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--serve", kind],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"floor server {kind} did not start (got {line!r})")
        self.port = int(line)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- load loops --------------------------------------------------------------------------------------


async def load_loop(
    request: Callable[[], Awaitable[None]], inflight: int, duration: float, cpu_clock: Callable[[], float]
) -> tuple[int, float, float]:
    """Run ``inflight`` workers until the deadline, counting after a warm-up.

    Returns (requests, wall seconds, CPU seconds of ``cpu_clock``), all measured after the warm-up.
    """
    done = 0
    counting = False
    stop_at = trio.current_time() + WARMUP + duration
    wall0 = cpu0 = 0.0

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < stop_at:
            await request()
            if counting:
                done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(inflight):
            nursery.start_soon(worker)
        await trio.sleep(WARMUP)
        counting = True
        wall0, cpu0 = time.perf_counter(), cpu_clock()
    return done, time.perf_counter() - wall0, cpu_clock() - cpu0


def _figures(done: int, wall: float, cpu: float) -> dict[str, float]:
    return {"requests": done, "per_s": round(done / wall), "per_cpu_s": round(done / cpu) if cpu > 0 else 0}


async def server_case(server: Server, duration: float, connections: int = 8) -> dict[str, float]:
    """Drive a server with keep-alive connections; report per CPU-second of the server process."""
    pool = H11Pool(f"http://127.0.0.1:{server.port}", max_connections=connections)

    async def request() -> None:
        resp = await pool.request(b"POST", TARGET, HEADERS, BODY)
        if resp.status != 201:
            raise RuntimeError(f"{server.kind} answered {resp.status}")

    try:
        await request()
        pid = server.proc.pid
        done, wall, cpu = await load_loop(request, connections, duration, lambda: cpu_seconds(pid))
    finally:
        await pool.aclose()
    return _figures(done, wall, cpu)


def h11_loop_request(stream: trio.SocketStream, port: int) -> Callable[[], Awaitable[None]]:
    conn = h11.Connection(h11.CLIENT)
    host = (b"host", b"127.0.0.1:%d" % port)

    async def request() -> None:
        headers = [host, *HEADERS, (b"content-length", b"%d" % len(BODY))]
        out = conn.send(h11.Request(method=b"POST", target=TARGET, headers=headers)) or b""
        out += conn.send(h11.Data(data=BODY)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise RuntimeError("server closed the connection")
        conn.start_next_cycle()

    return request


async def client_case(port: int, kind: str, inflight: int, duration: float) -> dict[str, float]:
    """Per CPU-second of this process (the client) against the plain h11 server."""
    stream: trio.SocketStream | None = None
    pool: H11Pool | None = None
    if kind == "h11":
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = h11_loop_request(stream, port)
    else:
        pool = H11Pool(f"http://127.0.0.1:{port}", max_connections=max(16, min(inflight, 100)))
        client = pool

        async def request() -> None:
            await client.request(b"POST", TARGET, HEADERS, BODY)

    try:
        done, wall, cpu = await load_loop(request, inflight, duration, time.process_time)
    finally:
        if stream is not None:
            await stream.aclose()
        if pool is not None:
            await pool.aclose()
    return _figures(done, wall, cpu)


# -- LMDB and codecs ---------------------------------------------------------------------------------


def lmdb_case(per_txn: int, duration: float) -> dict[str, float]:
    """Durable commits (sync + metasync, no writemap, like the store) of ``per_txn`` records each."""
    record = record_encoder.encode(_record(0))
    with tempfile.TemporaryDirectory(prefix="wadispatch-floor-") as tmp:
        env = lmdb.open(tmp, map_size=1 << 30, sync=True, metasync=True, writemap=False, max_dbs=2)
        db = env.open_db(b"messages")
        key = 0
        records = commits = 0
        t0 = time.perf_counter()
        deadline = t0 + duration
        while time.perf_counter() < deadline:
            with env.begin(write=True, db=db) as txn:
                for _ in range(per_txn):
                    key += 1
                    txn.put(key.to_bytes(8, "big"), record)
            records += per_txn
            commits += 1
        wall = time.perf_counter() - t0
        env.close()
    return {"records_per_s": round(records / wall), "commits_per_s": round(commits / wall, 1)}


def _record(i: int) -> MessageRecord:
    return MessageRecord(
        sid=f"SM{i:032x}",
        account_sid="AC00000000000000000000000000000001",
        from_number="+15550000001",
        to_number="+15551234567",
        body="Your code is 123456. It expires in 10 minutes.",
        date_created=1_790_000_000.123,
        date_updated=1_790_000_000.123,
        status_callback="https://example.com/status",
    )


def _per_op_us(fn: Callable[[], object], duration: float) -> float:
    n = 0
    batch = 1000
    t0 = time.perf_counter()
    deadline = t0 + duration
    while time.perf_counter() < deadline:
        for _ in range(batch):
            fn()
        n += batch
    return round((time.perf_counter() - t0) / n * 1e6, 3)


def codec_case(duration: float) -> dict[str, float]:
    record = _record(1)
    packed = record_encoder.encode(record)
    as_dict = msgspec.to_builtins(record)
    text = json.dumps(as_dict)
    share = duration / 4
    return {
        "msgpack_encode_us": _per_op_us(lambda: record_encoder.encode(record), share),
        "msgpack_decode_us": _per_op_us(lambda: record_decoder.decode(packed), share),
        "json_encode_us": _per_op_us(lambda: json.dumps(as_dict), share),
        "json_decode_us": _per_op_us(lambda: MessageRecord(**json.loads(text)), share),
    }


# -- the run -----------------------------------------------------------------------------------------


def run(duration: float, connections: int) -> dict[str, Any]:
    result: dict[str, Any] = {"duration_s": duration, "cpus": os.cpu_count()}
    servers: dict[str, dict[str, float]] = {}
    for kind in SERVERS:
        with Server(kind) as server:
            servers[kind] = trio.run(server_case, server, duration, connections)
        figures = servers[kind]
        _say(f"server {kind:<6} {figures['per_cpu_s']:>8} req/server-cpu-s  {figures['per_s']} req/s")
    result["server_per_cpu_s"] = {k: v["per_cpu_s"] for k, v in servers.items()}
    result["server_per_s"] = {k: v["per_s"] for k, v in servers.items()}

    clients: dict[str, dict[str, float]] = {}
    with Server("h11") as server:
        clients["h11_loop_1"] = trio.run(client_case, server.port, "h11", 1, duration)
        for n in POOL_INFLIGHT:
            clients[f"h11pool_{n}"] = trio.run(client_case, server.port, "pool", n, duration)
    floor = clients["h11_loop_1"]["per_cpu_s"]
    for name, figures in clients.items():
        _say(f"client {name:<12} {figures['per_cpu_s']:>8} req/client-cpu-s  "
             f"{figures['per_cpu_s'] / floor:5.2f}x the h11 loop")  # fmt: skip
    result["client_per_cpu_s"] = {k: v["per_cpu_s"] for k, v in clients.items()}
    result["h11pool_over_h11_loop"] = {
        n: round(clients[f"h11pool_{n}"]["per_cpu_s"] / floor, 2) for n in POOL_INFLIGHT
    }

    result["lmdb_records_per_s"] = {}
    for per_txn in LMDB_BATCHES:
        figures = lmdb_case(per_txn, duration)
        result["lmdb_records_per_s"][per_txn] = figures["records_per_s"]
        _say(f"lmdb   {per_txn:>5} records/txn {figures['records_per_s']:>10} records/s")
    result["codec"] = codec_case(duration)
    _say("codec  " + "  ".join(f"{k} {v}" for k, v in result["codec"].items()))
    return result


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per case")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections per server case")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration must be > 0 and --connections >= 1")
    print(json.dumps(run(args.duration, args.connections)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
