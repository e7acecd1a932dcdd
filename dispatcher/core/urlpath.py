"""Outside values in the URL paths we send to WhatsApp: checked against their character set, then escaped.

A media id, a message id or a phone number id comes from a webhook, a create
or the config. Put into a path as it came, an inbound media id such as
``../../v1/settings/application?x=`` turned a media download into a GET of the
number's settings with its bearer token (issue 12, item 8). So:

- where an id enters, ``check`` holds it to the characters its kind uses
  (``IdError`` otherwise), and ``valid`` says the same without raising, for
  decoders that keep what they cannot use instead of refusing a whole delivery;
- every channel URL path is built by ``path``, from segments each percent-escaped
  (only RFC 3986 unreserved characters stay literal, so ``/ ? # %`` and anything
  non-ASCII cannot change the path's shape), never empty and never a dot segment.

Both are needed: the check keeps nonsense out of the store and the logs, the
escaping makes a path safe even for a value that was never checked.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final, Literal

__all__ = ["IdError", "IdKind", "check", "path", "valid"]

IdKind = Literal["media_id", "message_id", "phone_number_id", "api_version", "template_name"]

# Each kind's character set, from the shapes the APIs use (reference sections 1.6, 1.8, 2.3):
_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    # On-Prem: a UUID ("d674171b-b912-4d76-9118-e2d571e16f33"); Cloud: digits ("1037543291543636").
    "media_id": re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,255}"),
    # Cloud: "wamid." + base64 ("...RTcA", "...GAA=="); On-Prem: base64url ("ABGGeZRAZ1NvAgo-sO98aw3w7J9b").
    "message_id": re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+/-]{0,255}"),
    # Graph object ids are digits.
    "phone_number_id": re.compile(r"[0-9]{1,32}"),
    # "v23.0"
    "api_version": re.compile(r"v[0-9]{1,3}\.[0-9]{1,2}"),
    # Meta: lowercase letters, digits and underscores, up to 512 characters.
    "template_name": re.compile(r"[a-z0-9_]{1,512}"),
}
_DOT_SEGMENTS: Final = frozenset({".", ".."})


class IdError(ValueError):
    """A value that does not have its kind's form (the message names the kind, not the value's use)."""


def valid(kind: IdKind, value: str) -> bool:
    """``value`` has the form of a ``kind`` (ASCII only: ``str.isascii`` first, as ``\\d`` and
    ``[A-Za-z]`` would otherwise be the only guard against look-alike digits and letters)."""
    return value.isascii() and _PATTERNS[kind].fullmatch(value) is not None


def check(kind: IdKind, value: str) -> str:
    """``value`` if it has the form of a ``kind``, else ``IdError``."""
    if not valid(kind, value):
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise IdError(f"not a valid {kind.replace('_', ' ')}: {shown!r}")
    return value


def path(*segments: str) -> bytes:
    """``/seg1/seg2/...`` with each segment percent-escaped as a whole (``/`` included).

    Raises:
        IdError: an empty or dot segment (``.`` / ``..``), which escaping cannot neutralise.
    """
    parts = []
    for segment in segments:
        if not segment or segment in _DOT_SEGMENTS:
            raise IdError(f"not a usable URL path segment: {segment!r}")
        parts.append(urllib.parse.quote(segment, safe=""))
    return ("/" + "/".join(parts)).encode("ascii")
