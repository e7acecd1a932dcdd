"""The simulator's no-I/O core in tests: requests made by hand, answers read, a recording poster."""

from __future__ import annotations

import json

import msgspec
import trio

from dispatcher.simulator import SimNumber, SimRequest, SimResponse

NUMBER = "+15550000001"
Json = dict[str, object]


class Recorder:
    """A fake webhook poster: records (trio time, url, payload) and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[float, str, Json]] = []

    async def __call__(self, url: str, body: bytes) -> int:
        self.posts.append((trio.current_time(), url, json.loads(body)))
        await trio.lowlevel.checkpoint()
        return self.status

    def statuses(self) -> list[Json]:
        found: list[Json] = []
        for _, _, payload in self.posts:
            found.extend(payload.get("statuses", []))
        return found


def number(**overrides: object) -> SimNumber:
    """The simulated ``NUMBER`` (password s3cret, webhooks to hook.test), with ``overrides``."""
    fields: Json = {"number": NUMBER, "password": "s3cret", "webhook_url": "http://hook.test/wa"}
    return msgspec.convert(fields | overrides, SimNumber)


def request(method: str, target: str, body: object = b"", *, token: str | None = None) -> SimRequest:
    """A request as the core receives it; a non-bytes ``body`` is sent as JSON."""
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return SimRequest(method=method, target=target, headers=headers, body=raw)


def body_of(resp: SimResponse) -> Json:
    """An answer's JSON body."""
    decoded: Json = json.loads(resp.body)
    return decoded


class Captured:
    """A fake signed-webhook poster (the Cloud simulator's): records (url, body, headers), answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.posts.append((url, body, headers))
        return 200
