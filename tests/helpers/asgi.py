"""Requests straight into an ASGI app, no server: what the front door answers to exact bytes."""

from __future__ import annotations

from typing import Any

import trio


async def asgi_post(app: Any, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    """One POST straight into an ASGI app, body in two chunks (as a socket may deliver it)."""
    status, answer_headers, answer = await asgi_exchange(app, path, headers, body)
    return status, answer_headers.get("content-type", ""), answer


async def asgi_exchange(
    app: Any, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """``asgi_post``, answering (status, every header by lower-case name, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    half = len(body) // 2
    events = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_headers = {bytes(k).decode().lower(): bytes(v).decode() for k, v in start["headers"]}
    return start["status"], answer_headers, b"".join(m.get("body", b"") for m in sent[1:])
