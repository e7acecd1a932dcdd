"""MediaUrl -> WhatsApp media message kind (image / video / audio / document / sticker).

WhatsApp fetches link-based media itself, so the daemon never downloads it;
the kind is decided from the content type the URL's file extension implies
(``mimetypes``), limited to the types WhatsApp accepts for each kind. Anything
else goes as a ``document``, which WhatsApp delivers whatever its type, with
the file name taken from the URL path.
"""

from __future__ import annotations

import mimetypes
import posixpath
from typing import Final
from urllib.parse import unquote, urlsplit

import attrs

from dispatcher.core.ssrf import RefusedURLError, check_host

MAX_MEDIA: Final = 10  # Twilio's limit of MediaUrl values per message
MAX_URL: Final = 2048

# Content types WhatsApp takes for each media kind (Meta's supported-media table).
KIND_BY_TYPE: Final[dict[str, str]] = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/webp": "sticker",
    "video/mp4": "video",
    "video/3gpp": "video",
    "audio/aac": "audio",
    "audio/mp4": "audio",
    "audio/mpeg": "audio",
    "audio/amr": "audio",
    "audio/ogg": "audio",
    "audio/opus": "audio",
}
# Extensions mimetypes does not know everywhere.
_EXTRA_TYPES: Final[dict[str, str]] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".3gp": "video/3gpp",
    ".aac": "audio/aac",
    ".m4a": "audio/mp4",
    ".amr": "audio/amr",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
}
CAPTIONED: Final = frozenset({"image", "video", "document"})  # audio and stickers take no caption


class MediaUrlError(ValueError):
    """A MediaUrl the daemon cannot hand to WhatsApp."""


@attrs.frozen
class MediaItem:
    kind: str
    link: str
    content_type: str | None
    filename: str | None  # documents only: what the recipient sees


def content_type(url: str) -> str | None:
    """The content type the URL's path extension implies, if any."""
    path = unquote(urlsplit(url).path)
    ext = posixpath.splitext(path)[1].lower()
    if not ext:
        return None
    return _EXTRA_TYPES.get(ext) or mimetypes.types_map.get(ext)


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, or MediaUrlError."""
    value = url.strip()
    if not value or len(value) > MAX_URL:
        raise MediaUrlError(f"The media URL {url!r} is empty or too long.")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise MediaUrlError(f"The media URL {url!r} is not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise MediaUrlError(f"The media URL {url!r} is not a valid http(s) URL.")
    try:
        check_host(parts.hostname, strict=False)
    except RefusedURLError as exc:
        raise MediaUrlError(f"The media URL {url!r} is not a valid URL: {exc}.") from None
    return value


def classify(url: str) -> MediaItem:
    """What kind of WhatsApp media message ``url`` becomes."""
    ctype = content_type(url)
    kind = KIND_BY_TYPE.get(ctype or "", "document")
    filename = None
    if kind == "document":
        filename = posixpath.basename(unquote(urlsplit(url).path)) or None
    return MediaItem(kind=kind, link=url, content_type=ctype, filename=filename)
