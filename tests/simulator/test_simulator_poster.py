"""The simulator's default webhook poster (``PoolPoster``) against a real h11 receiver."""

from __future__ import annotations

import base64

import trio

from dispatcher.simulator.poster import PoolPoster
from tests.helpers.http_servers import TEST_TIMEOUT, Reply, Seen, h11_handler, start_server


async def test_posts_reuse_one_connection_per_origin_with_target_and_userinfo(nursery: trio.Nursery) -> None:
    async def app(seen: Seen) -> Reply:
        return Reply(status=204 if seen.target == b"/gone" else 200, chunks=(b"",))

    with trio.fail_after(TEST_TIMEOUT):
        server = await start_server(nursery, h11_handler(app))
        poster = PoolPoster(max_connections=2, timeout=5.0)
        base = f"http://127.0.0.1:{server.port}"
        statuses = [
            await poster(f"{base}/hooks/1?k=v", b'{"a":1}'),
            await poster(f"{base}/hooks/1?k=v", b'{"a":2}'),
            await poster(f"http://bob:p%40ss@127.0.0.1:{server.port}/auth", b"{}"),
            await poster(f"{base}/gone", b"{}"),
        ]
        await poster.aclose()
    assert statuses == [200, 200, 200, 204]
    assert server.accepts == 1  # one origin, one keep-alive connection
    first, second, auth, _ = server.requests
    assert (first.target, first.body, second.body) == (b"/hooks/1?k=v", b'{"a":1}', b'{"a":2}')
    assert first.header(b"content-type") == b"application/json"
    assert first.header(b"authorization") is None
    assert auth.header(b"authorization") == b"Basic " + base64.b64encode(b"bob:p@ss")
