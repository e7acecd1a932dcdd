"""Bearer tokens of one simulated number: issued by login, checked on every call.

Tokens look like the real ones (an HS256 JWT: header, payload with ``user``,
``iat``, ``exp`` and ``wa:rand``, HMAC signature) but the store is the
authority: a token is valid only while it is in the store and its ``exp`` is
ahead of the simulator's wall clock, so expiry, logout and a restart (new
store) all behave like the real webapp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from datetime import UTC, datetime
from typing import final

import msgspec

from dispatcher.simulator import errors

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_SWEEP_AT = 1024


class _Claims(msgspec.Struct, frozen=True):
    user: str
    iat: int
    exp: int
    rand: str = msgspec.field(name="wa:rand")


_encode_claims = msgspec.json.Encoder().encode


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def expires_after(exp: float) -> str:
    """``exp`` in the On-Prem format ``YYYY-MM-DD HH:MM:SS+00:00`` (UTC, space separator)."""
    return datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


@final
class TokenStore:
    """Live tokens of one number; ``ttl`` is their lifetime in wall-clock seconds."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._secret = os.urandom(32)
        self._expiry: dict[str, int] = {}

    def issue(self, user: str, now: float) -> tuple[str, int]:
        """A new token for ``user`` at wall time ``now``; returns ``(token, exp)``."""
        if len(self._expiry) >= _SWEEP_AT:
            self._expiry = {tok: exp for tok, exp in self._expiry.items() if exp > now}
        iat = int(now)
        exp = int(now + self.ttl)
        claims = _Claims(user=user, iat=iat, exp=exp, rand=os.urandom(16).hex())
        signed = _HEADER + b"." + _b64(_encode_claims(claims))
        sig = _b64(hmac.digest(self._secret, signed, hashlib.sha256))
        token = (signed + b"." + sig).decode()
        self._expiry[token] = exp
        return token, exp

    def valid(self, token: str, now: float) -> bool:
        """True if ``token`` was issued here, not revoked, and ``now`` is before its ``exp``."""
        exp = self._expiry.get(token)
        if exp is None:
            return False
        if now >= exp:
            del self._expiry[token]
            return False
        return True

    def revoke_all(self) -> int:
        """Forget every token (revoked early, e.g. by an admin); returns how many were live."""
        count = len(self._expiry)
        self._expiry.clear()
        return count

    def revoke(self, token: str) -> bool:
        """Forget ``token`` (logout); other tokens of the same user stay valid."""
        return self._expiry.pop(token, None) is not None


def basic_credentials(authorization: str) -> tuple[str, str]:
    """``(user, password)`` from an ``Authorization: Basic ...`` value; else 401."""
    if authorization[:6].lower() != "basic ":
        raise errors.unauthorized()
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise errors.unauthorized() from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise errors.unauthorized()
    return user, password
