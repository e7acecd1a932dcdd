"""What a secret we check must be, and how a presented one is compared.

The secrets this daemon *checks* (account auth tokens, API-key secrets, webhook
secrets, Cloud app secrets and verify tokens, the admin token) must be strong:
an empty one would turn authentication off, a short or repetitive one can be
guessed. Weak means:

- empty;
- shorter than ``MIN_LENGTH`` (16) characters (Twilio's auth tokens and Meta's
  app secrets are 32 hex digits; ``openssl rand -hex 16`` makes one);
- fewer than ``MIN_DISTINCT`` (5) different characters (``aaaaaaaaaaaaaaaa``,
  ``abababababababab``, ``1111111111111112``).

Credentials this daemon only *presents* to WhatsApp (an On-Prem password, a
Cloud access token) are Meta's to judge; they need only be non-empty.

At check time too, an empty presented or expected secret never matches, so a
secret that became empty after the config was checked (a credential file
truncated in place) refuses everyone instead of letting everyone in.
"""

from __future__ import annotations

import hmac
from typing import Final

MIN_LENGTH: Final = 16
MIN_DISTINCT: Final = 5


def weakness(value: str) -> str | None:
    """Why ``value`` is too weak to check callers against, or None if it is strong enough."""
    if not value.strip():
        return "must not be empty"
    if len(value) < MIN_LENGTH:
        return f"too short ({len(value)} characters): use at least {MIN_LENGTH}, e.g. openssl rand -hex 16"
    if len(set(value)) < MIN_DISTINCT:
        return f"too weak: fewer than {MIN_DISTINCT} different characters"
    return None


def matches(presented: str | bytes, expected: str | bytes | None) -> bool:
    """Constant-time comparison in which an empty secret, presented or expected, never matches."""
    if not presented or not expected:
        return False
    given = presented.encode() if isinstance(presented, str) else presented
    wanted = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given, wanted)
