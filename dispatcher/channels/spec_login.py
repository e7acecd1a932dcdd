"""A spec channel's login call (``[auth.login]``): a token and its lifetime from the answer.

The token manager (``actors.credentials.token``) calls this as it calls the On-Prem
login: at start, ``refresh_before`` ahead of expiry and on a refused send. The request
is built from the spec with the number's settings; the token is read at ``token_path``
and its lifetime (seconds from now) at ``expires_in_path``, else ``default_ttl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote_plus

import msgspec

from actors.credentials.token import LoginError
from actors.transport import Transport
from dispatcher.core.channelspec import paths, template
from dispatcher.core.channelspec.model import Login
from dispatcher.core.clock import WallClock
from dispatcher.core.models import StoredToken


async def spec_login(
    transport: Transport, login: Login, constants: Mapping[str, object], wall: WallClock
) -> StoredToken:
    """Log in as ``login`` says; ``constants`` are the number's ``setting.*`` values.

    Raises:
        LoginError: refused, or an answer without a token.
    """
    body_doc = template.compile_tree(login.body, constants)({})
    assert isinstance(body_doc, dict)
    if login.format == "form":
        body = "&".join(f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in body_doc.items()).encode()
        content_type = b"application/x-www-form-urlencoded"
    else:
        body = msgspec.json.encode(body_doc)
        content_type = b"application/json"
    headers = [(b"content-type", content_type)]
    for name, value in login.headers.items():
        headers.append((name.lower().encode(), str(template.compile_text(value, constants)({})).encode()))
    target = str(template.compile_text(login.path, constants)({})).encode()
    resp = await transport.request(login.method.encode(), target, headers, body)
    if not 200 <= resp.status < 300:
        raise LoginError(f"login refused: HTTP {resp.status}: {resp.body[:200]!r}")
    try:
        doc = msgspec.json.decode(resp.body)
    except msgspec.DecodeError as exc:
        raise LoginError("login answer is not JSON") from exc
    token = paths.parse(login.token_path).get(doc)
    if not isinstance(token, str) or not token:
        raise LoginError(f"login answer has no token at {login.token_path}")
    ttl: object = login.default_ttl
    if login.expires_in_path is not None:
        found = paths.parse(login.expires_in_path).get(doc)
        if found is not None:
            ttl = found
    try:
        seconds = float(str(ttl))
    except ValueError as exc:
        raise LoginError(f"unreadable token lifetime {ttl!r}") from exc
    if seconds <= 0:
        raise LoginError("login returned an already expired token")
    return StoredToken(token=token, expires_at=wall.now() + seconds, endpoint="")
