"""Random and hostile requests to every Messages route over real HTTP: always a Twilio error, never a 500."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import trio

from tests.helpers.daemon import ACCOUNT, messages_path, running_daemon, sandbox_config

SEED = 20261130
CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/json; x",
]


@pytest.fixture
async def daemon(tmp_path: Path):
    with trio.fail_after(60):
        async with running_daemon(sandbox_config(tmp_path / "data")) as pair:
            yield pair


def hostile_bodies(rng: random.Random, n: int) -> list[bytes]:
    fixed = [
        b"",
        b"=",
        b"&&&",
        b"To",
        b"%",
        b"%zz=%zz",
        b"To=%E2%82",
        b"\x00\x01\x02",
        b"null",
        b"[]",
        b"{}",
        b'{"To": {"a": [1, {"b": null}]}}',
        b'{"Body": 1e400}',
        b'{"To": "whatsapp:+15551234567", "From": "whatsapp:+15550000001", "Body": "\\u0000"}',
        b'"\\ud800"',
        json.dumps({"To": ["a"] * 50, "Body": "x" * 5000}).encode(),
    ]
    noise = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(n)]
    return fixed + noise


async def test_no_route_answers_500(daemon) -> None:
    _, client = daemon
    rng = random.Random(SEED)
    created = await client.post(
        messages_path(), data={"To": "whatsapp:+15551234567", "From": "whatsapp:+15550000001", "Body": "x"}
    )
    sid = created.json()["sid"]
    seen: set[int] = set()
    for body in hostile_bodies(rng, 60):
        ctype = rng.choice(CONTENT_TYPES)
        headers = {} if ctype is None else {"Content-Type": ctype}
        for method, path in [
            ("POST", messages_path()),
            ("POST", messages_path(sid)),
            ("POST", "/v1/messages:batch"),
        ]:
            resp = await client.request(method, path, content=body, headers=headers)
            assert resp.status_code < 500, (method, path, body, resp.text)
            seen.add(resp.status_code)
            if resp.status_code >= 400:
                error = resp.json()
                assert error["code"] and error["message"] and error["status"] == resp.status_code
    names = ["To", "From", "DateSent", "DateSent<", "DateSent>", "PageSize", "Page", "PageToken"]
    for _ in range(60):
        value = "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(0, 12)))
        params = {rng.choice(names): value}
        resp = await client.get(messages_path(), params=params)
        assert resp.status_code in (200, 400), (params, resp.text)
    for weird in ["SM", "x" * 300, "%00", "SM" + "0" * 32 + ".json"]:
        resp = await client.get(f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{weird}.json")
        assert resp.status_code == 404 and resp.json()["code"] == 20404
    assert 400 in seen
