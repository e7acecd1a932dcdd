"""Console sessions: a signed cookie, no server-side state, and CSRF tokens bound to it.

The signing key is derived from the admin token (HMAC-SHA256), so every worker
process of a host agrees on it, a restart keeps operators logged in, and
rotating the admin token ends every session at once. A cookie is
``issued.nonce.mac``: it is valid until ``SESSION_TTL`` after ``issued``. The CSRF
token of a session is an HMAC of its nonce (the synchronizer token pattern without
a session table): a form posted from another site cannot know it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final, final

from dispatcher.core.clock import WallClock

COOKIE: Final = "wadispatch_console"
SESSION_TTL: Final = 12 * 3600.0
_KEY_LABEL: Final = b"wadispatch console session v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@final
class SessionKeys:
    def __init__(self, admin_token: str, wall: WallClock, *, ttl: float = SESSION_TTL) -> None:
        self._key = hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._wall = wall
        self.ttl = ttl

    def _mac(self, label: str, text: str) -> str:
        return _b64(hmac.new(self._key, f"{label}:{text}".encode(), hashlib.sha256).digest())

    def issue(self) -> str:
        """A new session cookie value."""
        body = f"{int(self._wall.now())}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._mac('session', body)}"

    def nonce(self, cookie: str | None) -> str | None:
        """The session's nonce if ``cookie`` is a valid, unexpired session; else None."""
        if not cookie or len(cookie) > 200:
            return None
        issued, _, rest = cookie.partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued.isdigit() or not nonce or not mac:
            return None
        if not hmac.compare_digest(mac, self._mac("session", f"{issued}.{nonce}")):
            return None
        age = self._wall.now() - int(issued)
        if not -60.0 <= age < self.ttl:  # a minute of clock step forgiven
            return None
        return nonce

    def csrf(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def csrf_matches(self, nonce: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf(nonce), given or "")
