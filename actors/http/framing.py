"""Strict HTTP/1.1 framing for the common case, with h11 behind it for everything else.

Profiles of delivery put h11's generic machinery (event objects, state
machine, per-header validation) at ~30% of the daemon's CPU. The hot path
only ever sees one shape: a request with a few fixed headers and a
Content-Length body, answered by ``HTTP/1.1 NNN`` with a Content-Length body.
These functions handle exactly that shape and return None for anything else
(1xx, 204/304, chunked, HTTP/1.0, obs-fold, bare LF, duplicate or odd
Content-Length, framing headers in the request...), so the caller hands the
exchange to h11, which stays the reference for every unusual message and for
every error. Validation uses h11's own grammar (``h11._abnf``), so what passes
here h11 would accept too.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from actors.transport import Headers

__all__ = [
    "RequestHead",
    "ResponseHead",
    "encode_response",
    "parse_request_head",
    "parse_response_head",
    "request_head",
]

# h11._abnf: token, request-target (vchar+), field-value.
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
_VALUE: Final = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
# Request headers that change framing or the connection: such requests go through h11.
_FRAMING: Final = frozenset(
    {b"connection", b"content-length", b"expect", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# HEAD answers carry no body whatever their Content-Length; CONNECT switches protocols.
_H11_METHODS: Final = frozenset({b"HEAD", b"CONNECT"})
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")
_REQUEST_LINE: Final = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+) ([\x21-\x7e]+) HTTP/1\.1")
# Header names a message with them is judged on (the rest are passed through as they are).
_SPECIAL: Final = frozenset({b"connection", b"content-length", b"host", *_FRAMING})
_NO_BODY_STATUSES: Final = frozenset({204, 304})

ResponseHead = tuple[int, Headers, int, bool]
"""``(status, headers with lowercased names, content length, keep-alive)``."""
RequestHead = tuple[bytes, bytes, Headers, int, bool]
"""``(method, target, headers with lowercased names, content length, keep-alive)``."""


def request_head(method: bytes, target: bytes, headers: Headers) -> bytes | None:
    """The request line and ``headers`` as wire bytes (each line ending in CRLF, no blank line).

    Returns None when the request needs h11: a HEAD or CONNECT, not exactly one
    Host header, or a header that changes framing (Content-Length, Connection,
    Transfer-Encoding...).

    Raises:
        ValueError: an invalid method, target, header name or value (as h11 would refuse).
    """
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid request: illegal method {method!r}")
    if method in _H11_METHODS:
        return None
    if not _TARGET.fullmatch(target):
        raise ValueError(f"invalid request: illegal target {target!r}")
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    hosts = 0
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid request: illegal header name {name!r}")
        lname = name.lower()
        if lname in _FRAMING:
            return None
        hosts += lname == b"host"
        if not _VALUE.fullmatch(value):
            raise ValueError(f"invalid request: illegal header value {value!r}")
        lines += (name, b": ", value, b"\r\n")
    return b"".join(lines) if hosts == 1 else None


def parse_response_head(data: bytes, end: int) -> ResponseHead | None:
    """Parse the response head ``data[:end]`` (``end`` is where ``\\r\\n\\r\\n`` starts).

    Returns None unless the response is ``HTTP/1.1`` with a 2xx-5xx status other
    than 204/304, plain header lines and exactly one Content-Length and no
    Transfer-Encoding: everything else (including garbage) is h11's to judge.
    """
    parsed = _response_head(data[:end])
    if parsed is None:
        return None
    status, headers, length, keep_alive = parsed
    return status, list(headers), length, keep_alive


@functools.lru_cache(maxsize=256)
def _response_head(head: bytes) -> tuple[int, tuple[tuple[bytes, bytes], ...], int, bool] | None:
    """``parse_response_head`` of a whole head, remembered: an API answers with the same
    head bytes again and again (same headers, same length), so most are parsed once."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if not _STATUS_LINE.fullmatch(status_line):
        return None
    status = int(status_line[9:12])
    if status in _NO_BODY_STATUSES:
        return None
    fields = _parse_fields(lines)
    if fields is None or fields[1] < 0:
        return None  # odd header lines, or delimited by EOF (or chunked): h11's job
    headers, length, keep_alive, _ = fields
    return status, tuple(headers), length, keep_alive


def parse_request_head(data: bytes, end: int) -> RequestHead | None:
    """Parse the request head ``data[:end]`` (``end`` is where ``\\r\\n\\r\\n`` starts).

    Returns None unless the request is ``HTTP/1.1``, not HEAD or CONNECT, with one
    Host, plain header lines, at most one Content-Length, and no Transfer-Encoding
    or Expect: everything else (including garbage) is h11's to judge.
    """
    lines = data[:end].split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    method, target = match.groups()
    if method in _H11_METHODS:
        return None
    fields = _parse_fields(lines)
    if fields is None or fields[3] != 1:
        return None
    headers, length, keep_alive, _ = fields
    return method, target, headers, max(length, 0), keep_alive


def _parse_fields(lines: list[bytes]) -> tuple[Headers, int, bool, int] | None:
    """``(headers, content length or -1, keep-alive, Host count)`` of ``lines[1:]``, or None."""
    headers: Headers = []
    length = -1
    keep_alive = True
    hosts = 0
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return None  # obs-fold, bare LF, no colon, space before the colon...
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            return None
        name = name.lower()
        if name in _SPECIAL:
            if name == b"content-length":
                if length >= 0 or not value.isdigit() or len(value) > 18:
                    return None
                length = int(value)
            elif name == b"host":
                hosts += 1
            elif name == b"connection":
                if b"close" in [t.strip(b" \t") for t in value.lower().split(b",")]:
                    keep_alive = False
            else:  # Transfer-Encoding, Expect, Upgrade...
                return None
        headers.append((name, value))
    return headers, length, keep_alive, hosts


def encode_response(status: int, reason: bytes, headers: Headers, body: bytes, *, close: bool) -> bytes:
    """A whole ``HTTP/1.1`` response with a Content-Length body (``Connection: close`` if ``close``).

    ``headers`` must not hold Content-Length, Connection or Transfer-Encoding.

    Raises:
        ValueError: an invalid header name or value.
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        lines += (name, b": ", value, b"\r\n")
    if close:
        lines.append(b"connection: close\r\n")
    lines += (b"content-length: %d\r\n\r\n" % len(body), body)
    return b"".join(lines)
