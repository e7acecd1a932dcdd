"""Logging in to the operator console over HTTP, as a browser would (form post, cookie kept)."""

from __future__ import annotations

import re

import httpx

from tests.helpers.daemon import ADMIN_TOKEN

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def login(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> str:
    """Log ``client`` in (its cookie jar keeps the session); returns the session's CSRF token."""
    resp = await client.post("/console/login", data={"token": token, "next": "/console/fleet"}, auth=None)
    assert resp.status_code == 303, resp.text
    page = await client.get("/console/fleet", auth=None)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)
