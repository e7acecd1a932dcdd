"""The console's locks: no page without a session, CSRF on actions, strict CSP, cookie flags.

Real daemon, real HTTP over 127.0.0.1; every console route is found from the app's
own URL map, so a route added later is checked too.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import trio

from dispatcher.core.clock import TrioWallClock
from dispatcher.frontdoor.console.guard import CSP
from dispatcher.frontdoor.console.session import COOKIE, SessionKeys
from tests.helpers.console import login
from tests.helpers.daemon import ADMIN_TOKEN, admin_config, running_daemon, sandbox_config

SENDER = "+15550000001"
_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_VALUES = {"number": SENDER, "action": "pause", "name": "console.js"}


def console_routes(app: object) -> list[tuple[str, str]]:
    """(method, path) of every console rule, its parameters filled in."""
    routes = []
    for rule in app.url_map.iter_rules():  # type: ignore[attr-defined]
        if not rule.rule.startswith("/console"):
            continue
        path = _PARAM.sub(lambda m: _VALUES[m.group(1)], rule.rule)
        routes += [(method, path) for method in rule.methods if method in ("GET", "POST")]
    return sorted(routes)


async def test_every_console_route_refuses_without_a_session(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            routes = console_routes(daemon.quart_app)
            assert len(routes) >= 12
            public = 0
            for method, path in routes:
                resp = await client.request(method, path, auth=None)
                assert resp.headers["Content-Security-Policy"] == CSP, path
                if path == "/console/login" or path.startswith("/console/static/"):
                    public += 1
                    if method == "GET":
                        assert resp.status_code == 200, path
                    continue
                if method == "GET" and not path.startswith("/console/api/"):
                    assert resp.status_code == 303, path
                    assert resp.headers["Location"].startswith("/console/login?next="), path
                else:
                    assert resp.status_code == 401, (method, path)
                assert SENDER not in resp.text or resp.status_code == 303
                assert "wadispatch_console" not in resp.headers.get("set-cookie", "")
            assert public == 3  # login form, login post, static files
            # A forged or expired cookie is no session either.
            for forged in ("1.abc.def", "", "x" * 300, f"{10**10}.n.m"):
                client.cookies.set(COOKIE, forged, path="/console")
                assert (await client.get("/console/api/fleet", auth=None)).status_code == 401
            assert not daemon.supervisor.actor(SENDER).paused  # type: ignore[union-attr]


async def test_login_sets_a_strict_session_cookie_and_wrong_tokens_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (_, client):
            resp = await client.post("/console/login", data={"token": "not-the-token"}, auth=None)
            assert resp.status_code == 401 and "not the admin token" in resp.text
            assert COOKIE not in resp.headers.get("set-cookie", "")
            resp = await client.post(
                "/console/login", data={"token": ADMIN_TOKEN, "next": "//evil.example/x"}, auth=None
            )
            assert resp.status_code == 303 and resp.headers["Location"] == "/console/fleet"
            cookie = resp.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
            assert "Secure" not in cookie  # plain HTTP here: a Secure cookie would never come back
            async with httpx.AsyncClient(base_url=str(client.base_url)) as tls_proxied:
                resp = await tls_proxied.post(
                    "/console/login", data={"token": ADMIN_TOKEN}, headers={"X-Forwarded-Proto": "https"}
                )
                assert "Secure" in resp.headers["set-cookie"]
            assert (await client.get("/console/fleet", auth=None)).status_code == 200
            assert (await client.get("/console/api/fleet", auth=None)).status_code == 200


async def test_actions_need_the_sessions_csrf_token_and_this_origin(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(admin_config(tmp_path / "data")) as (daemon, client):
            csrf = await login(client)
            actor = daemon.supervisor.actor(SENDER)
            assert actor is not None
            url = f"/console/numbers/{SENDER}/pause"
            for form in ({"confirmed": "yes"}, {"confirmed": "yes", "csrf": "forged"}, {"csrf": ""}):
                resp = await client.post(url, data=form, auth=None)
                assert resp.status_code == 403, form
            # Another session's token is not this one's.
            other = SessionKeys(ADMIN_TOKEN, TrioWallClock())
            other_csrf = other.csrf(other.nonce(other.issue()) or "")
            assert (
                await client.post(url, data={"csrf": other_csrf, "confirmed": "yes"}, auth=None)
            ).status_code == 403
            # A form posted from another site, even with the token.
            evil = {"Origin": "https://evil.example"}
            resp = await client.post(url, data={"csrf": csrf, "confirmed": "yes"}, headers=evil, auth=None)
            assert resp.status_code == 403
            assert not actor.paused
            # Behind a proxy that forwards the host the browser reached, that origin is ours.
            proxied = {"Origin": "https://ops.example", "X-Forwarded-Host": "ops.example"}
            resp = await client.post(url, data={"csrf": csrf}, headers=proxied, auth=None)
            assert resp.status_code == 200 and not actor.paused  # the confirmation page
            # A console path that does not exist: still no data, still the CSP.
            resp = await client.get("/console/nope", auth=None)
            assert resp.status_code == 404 and resp.headers["Content-Security-Policy"] == CSP
            # Without the confirmation: a page asking for it, nothing done.
            resp = await client.post(url, data={"csrf": csrf}, auth=None)
            assert resp.status_code == 200 and "Yes, pause" in resp.text
            assert not actor.paused
            resp = await client.post(url, data={"csrf": csrf, "confirmed": "yes"}, auth=None)
            assert resp.status_code == 303 and resp.headers["Location"].endswith("?done=pause")
            assert actor.paused
            # Logging out needs the token too, then the cookie is gone.
            assert (await client.post("/console/logout", data={}, auth=None)).status_code == 403
            resp = await client.post("/console/logout", data={"csrf": csrf}, auth=None)
            assert resp.status_code == 303
            assert (await client.get("/console/api/fleet", auth=None)).status_code == 401


async def test_console_is_off_without_an_admin_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_daemon(sandbox_config(tmp_path / "data")) as (daemon, client):
            for method, path in console_routes(daemon.quart_app):
                resp = await client.request(method, path, data={"token": ""}, auth=None)
                assert resp.status_code == 403, path
                assert "disabled" in resp.text


async def test_sessions_expire_and_die_with_the_admin_token(autojump_clock: trio.testing.MockClock) -> None:
    wall = TrioWallClock(start=1_800_000_000.0)
    keys = SessionKeys(ADMIN_TOKEN, wall, ttl=3600.0)
    cookie = keys.issue()
    nonce = keys.nonce(cookie)
    assert nonce is not None and keys.csrf_matches(nonce, keys.csrf(nonce))
    assert not keys.csrf_matches(nonce, "") and not keys.csrf_matches(nonce, None)
    # Another process with the same admin token accepts it (workers, restarts)...
    assert SessionKeys(ADMIN_TOKEN, wall).nonce(cookie) == nonce
    # ...a rotated admin token does not.
    assert SessionKeys(ADMIN_TOKEN + "-rotated", wall).nonce(cookie) is None
    issued, rest = cookie.split(".", 1)
    assert keys.nonce(f"{int(issued) + 1}.{rest}") is None  # the time is signed
    await trio.sleep(3599.0)
    assert keys.nonce(cookie) == nonce
    await trio.sleep(1.0)
    assert keys.nonce(cookie) is None
